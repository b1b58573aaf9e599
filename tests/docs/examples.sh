#!/usr/bin/env bash
# Docs tier: runs the SQL examples of the documentation and compares each statement's real
# output with the output written under it. Runs against the running server of PGHOST,
# PGPORT and PGUSER (a superuser; pg_billing installed in it), with psql.
#
#   tests/docs/examples.sh            every group below
#   tests/docs/examples.sh GROUP...   only those groups: tour, reference, pricing, errors, scaleout, scheduling, invoicing, taxes,
#                                     coupons, previews, addons, creditnotes, progressive, fixedcharges,
#                                     planchanges, payinadvance, wallets
#
# Each group runs in a fresh database (pg_billing_docs_<group>), in one psql session, so
# that SET, temporary objects and the rows an example writes carry on to the next one:
#   tour       README.md's five-minute tour (which creates the extension itself)
#   reference  docs/reference/catalog.md, metering.md, usage.md and bi.md, in that order
#   pricing    docs/reference/pricing.md
#   errors     docs/reference/errors.md
#   scaleout   docs/reference/scale-out.md (on a server without Citus)
#   scheduling docs/reference/scheduling.md (in a database without pg_cron)
#   invoicing  docs/reference/invoicing.md
#   taxes      docs/reference/taxes.md
#   coupons    docs/reference/coupons.md
#   previews   docs/reference/previews.md
#   addons     docs/reference/add-ons.md
#   creditnotes docs/reference/credit-notes.md
#   progressive docs/reference/progressive.md
#   fixedcharges docs/reference/fixed-charges.md
#   planchanges docs/reference/plan-changes.md
#   payinadvance docs/reference/pay-in-advance.md
#   wallets    docs/reference/wallets.md
#
# How the pages are read: every ```sql block is split into statements (SQL up to a `;`
# outside quotes and comments, or a psql backslash command on its own line; the data lines
# of a COPY ... FROM STDIN up to `\.` go with it). The `-- ` lines right after a statement
# are its expected output, as psql prints it (aligned; errors as ERROR/DETAIL/HINT lines,
# notices before the result); they end at a blank line, at the next statement, or at the
# first comment line that does not look like output (prose, which introduces the next
# statement). A statement without output lines, or whose output lines contain the word
# "abbreviated", is run but not compared. Compared: the lines without their `-- ` prefix,
# without trailing whitespace, blank lines and `(N rows)` footers. An example must not
# print what depends on the day it runs (a timestamp from now()): it selects something
# stable instead.
#
# The sessions run with TimeZone UTC, DateStyle ISO, messages in English, VERBOSITY default
# and SHOW_CONTEXT never (the pages show an error's ERROR, DETAIL and HINT, not the CONTEXT
# of the PL/pgSQL function that raised it). Errors do not stop a session. The script, the
# output and the errors of each group's session are left in $TMPDIR/pg_billing_docs_examples.
#
# Prints one line per mismatch (file:line of the statement) with a unified diff, then
# `docs examples: N statements checked, M mismatches`; exits non-zero on any mismatch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${TMPDIR:-/tmp}/pg_billing_docs_examples
rm -rf "$work"; mkdir -p "$work"

export PGOPTIONS="-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c lc_messages=C -c client_min_messages=notice"
export PGCLIENTENCODING=UTF8
command -v psql >/dev/null || { echo "docs examples: psql is not on PATH" >&2; exit 1; }
unset PGDATABASE PGTZ PGDATESTYLE

exec python3 - "$root" "$work" "$@" <<'PY'
import difflib
import os
import re
import subprocess
import sys

root, work, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]

GROUPS = [
    ("tour", [("README.md", "A five-minute tour")], False),
    ("reference", [("docs/reference/catalog.md", None), ("docs/reference/metering.md", None),
                   ("docs/reference/usage.md", None), ("docs/reference/bi.md", None)], True),
    ("pricing", [("docs/reference/pricing.md", None)], True),
    ("errors", [("docs/reference/errors.md", None)], True),
    ("scaleout", [("docs/reference/scale-out.md", None)], True),
    ("scheduling", [("docs/reference/scheduling.md", None)], True),
    ("invoicing", [("docs/reference/invoicing.md", None)], True),
    ("taxes", [("docs/reference/taxes.md", None)], True),
    ("coupons", [("docs/reference/coupons.md", None)], True),
    ("previews", [("docs/reference/previews.md", None)], True),
    ("addons", [("docs/reference/add-ons.md", None)], True),
    ("creditnotes", [("docs/reference/credit-notes.md", None)], True),
    ("progressive", [("docs/reference/progressive.md", None)], True),
    ("fixedcharges", [("docs/reference/fixed-charges.md", None)], True),
    ("planchanges", [("docs/reference/plan-changes.md", None)], True),
    ("payinadvance", [("docs/reference/pay-in-advance.md", None)], True),
    ("wallets", [("docs/reference/wallets.md", None)], True),
]
unknown = [g for g in wanted if g not in [name for name, _, _ in GROUPS]]
if unknown:
    sys.exit(f"docs examples: unknown group {', '.join(unknown)} (groups: tour, reference, pricing, errors, scaleout, scheduling, invoicing, taxes, coupons, previews, addons, creditnotes, progressive, fixedcharges, planchanges, payinadvance, wallets)")

PSQL = ["psql", "-X", "-P", "pager=off"]

# A comment line under a statement is output when it looks like what psql prints: aligned
# rows and headers (which start with a space), separators, footers and notes in
# parentheses, server messages, command tags and JSON.
MESSAGE = re.compile(r"^(ERROR|WARNING|NOTICE|INFO|LOG|DEBUG|DETAIL|HINT|CONTEXT|QUERY|STATEMENT|LOCATION|LINE \d+):")
COMMAND_TAG = re.compile(r"^[A-Z]+( [A-Z]+)*( \d+)*$")
FOOTER = re.compile(r"^\(\d+ rows?\)$")


def looks_like_output(text):
    return (text == "" or text[0] in " -({[" or MESSAGE.match(text) is not None
            or COMMAND_TAG.match(text) is not None)


def comment_text(line):
    """The text of a `-- ` comment line, or None for any other line."""
    stripped = line.strip()
    if not stripped.startswith("--"):
        return None
    return line.lstrip()[3:] if line.lstrip().startswith("-- ") else stripped[2:]


class Statement:
    def __init__(self, path, line, text):
        self.path, self.line, self.text = path, line, text
        self.expected = []


def sql_blocks(path, section):
    """(first line number, lines) of every ```sql block of the file, or of its section."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks, block, in_section, fence_line = [], None, section is None, 0
    for number, line in enumerate(lines, 1):
        if block is None:
            if line.startswith("## ") and section is not None:
                in_section = line[3:].strip() == section
            elif line.strip() == "```sql" and in_section:
                block, fence_line = [], number
        elif line.strip() == "```":
            blocks.append((fence_line + 1, block))
            block = None
        else:
            block.append(line)
    if block is not None:
        sys.exit(f"docs examples: {path}:{fence_line}: unterminated ```sql block")
    if section is not None and not blocks:
        sys.exit(f"docs examples: {path}: no ```sql block in section {section!r}")
    return blocks


def statement_end(text, state):
    """Scans text (one line, or its rest) for the `;` that ends a statement. state holds
    the quote or comment the scan is in across lines. Returns the index after the `;`, or
    None when the statement goes on."""
    i = 0
    while i < len(text):
        c = text[i]
        mode = state.get("mode")
        if mode == "'" or mode == '"':
            if c == mode:
                state["mode"] = None
        elif mode == "$":
            tag = state["tag"]
            if text.startswith(tag, i):
                state["mode"] = None
                i += len(tag)
                continue
        elif mode == "/*":
            if text.startswith("*/", i):
                state["mode"] = None
                i += 2
                continue
        else:
            if c in "'\"":
                state["mode"] = c
            elif text.startswith("--", i):
                return None
            elif text.startswith("/*", i):
                state["mode"] = "/*"
                i += 2
                continue
            elif c == "$":
                m = re.match(r"\$[A-Za-z_]*\$", text[i:])
                if m and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
                    state["mode"], state["tag"] = "$", m.group(0)
                    i += len(m.group(0))
                    continue
            elif c == ";":
                return i + 1
        i += 1
    return None


def parse(path, section):
    """The statements of the file's ```sql blocks, each with its expected output lines."""
    statements = []
    for first, lines in sql_blocks(path, section):
        items = []  # ("stmt", Statement) | ("comment", text, line) | ("blank",)
        i = 0
        pending = None  # the rest of a line after a `;`
        while i < len(lines) or pending is not None:
            if pending is not None:
                line, number, pending = pending, first + i - 1, None
            else:
                line, number = lines[i], first + i
                i += 1
                stripped = line.strip()
                if stripped == "":
                    items.append(("blank",))
                    continue
                if comment_text(line) is not None:
                    items.append(("comment", comment_text(line), number))
                    continue
                if stripped.startswith("\\"):
                    items.append(("stmt", Statement(path, number, [stripped])))
                    continue
            # An SQL statement, from this line on.
            text, state, start = [], {}, number
            while True:
                end = statement_end(line, state)
                if end is not None:
                    text.append(line[:end])
                    rest = line[end:].strip()
                    if rest and not rest.startswith("--"):
                        pending = line[end:]
                    break
                text.append(line)
                if i >= len(lines):
                    sys.exit(f"docs examples: {path}:{start}: statement without its closing `;`")
                line = lines[i]
                i += 1
            statement = Statement(path, start, text)
            if re.match(r"\s*COPY\b.*\bFROM\s+STDIN\b", " ".join(text), re.IGNORECASE | re.DOTALL):
                while True:
                    if i >= len(lines):
                        sys.exit(f"docs examples: {path}:{start}: COPY data without its closing \\.")
                    statement.text.append(lines[i])
                    i += 1
                    if lines[i - 1] == "\\.":
                        break
            items.append(("stmt", statement))
        # The comment lines right after a statement, up to the first one that is prose.
        for k, item in enumerate(items):
            if item[0] != "stmt":
                continue
            for following in items[k + 1:]:
                if following[0] != "comment" or not looks_like_output(following[1]):
                    break
                item[1].expected.append(following[1])
            statements.append(item[1])
    return statements


def normalized(lines):
    out = []
    for line in lines:
        line = line.rstrip()
        if line and not FOOTER.match(line):
            out.append(line)
    return out


def psql(database, *args):
    done = subprocess.run(PSQL + ["-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", "SET client_min_messages = warning"]
                          + list(args), stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"docs examples: psql {' '.join(args)} failed in database {database}")


checked = mismatches = 0
for name, files, create_extension in GROUPS:
    if wanted and name not in wanted:
        continue
    statements = [s for path, section in files for s in parse(path, section)]
    database = f"pg_billing_docs_{name}"
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {database}", "-c", f"CREATE DATABASE {database}")
    script = os.path.join(work, f"{name}.sql")
    marker = "@@docs-example {}@@"
    with open(script, "w", encoding="utf-8") as f:
        f.write("\\set VERBOSITY default\n\\set SHOW_CONTEXT never\n")
        if create_extension:
            f.write("CREATE EXTENSION pg_billing;\n")
        for n in range(len(statements) + 1):
            if n > 0:
                f.write("\n".join(statements[n - 1].text) + "\n")
            f.write(f"\\echo {marker.format(n)}\n\\warn {marker.format(n)}\n")
    with open(os.path.join(work, f"{name}.out"), "w+", encoding="utf-8") as out, \
         open(os.path.join(work, f"{name}.err"), "w+", encoding="utf-8") as err:
        subprocess.run(PSQL + ["-d", database, "-f", script], stdout=out, stderr=err, timeout=1800)
        out.seek(0)
        err.seek(0)
        streams = [out.read().split("\n"), err.read().split("\n")]
    location = re.compile(r"^psql:" + re.escape(script) + r":\d+: ")
    # Each statement's lines of each stream: between its marker and the one before.
    per_statement = []
    for lines in streams:
        parts, current = {}, None
        for line in lines:
            m = re.fullmatch(r"@@docs-example (\d+)@@", line)
            if m:
                current = int(m.group(1)) + 1
                parts[current] = []
            elif current is not None:
                parts[current].append(location.sub("", line))
        per_statement.append(parts)
    for n, statement in enumerate(statements, 1):
        if not statement.expected or any("abbreviated" in line.lower() for line in statement.expected):
            continue
        checked += 1
        if n not in per_statement[0] or n not in per_statement[1]:
            actual = ["(the session ended before this statement; see " + os.path.join(work, name + ".err") + ")"]
        else:
            actual = normalized(per_statement[1][n] + per_statement[0][n])
        expected = normalized(statement.expected)
        if actual != expected:
            mismatches += 1
            print(f"{statement.path}:{statement.line}: output differs from the documented one")
            for line in difflib.unified_diff(expected, actual, "documented", "actual", lineterm="", n=2):
                print("    " + line)

print(f"docs examples: {checked} statements checked, {mismatches} mismatches")
sys.exit(1 if mismatches else 0)
PY
