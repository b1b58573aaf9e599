//! Postgres `jsonb` read where it lies. Lookups go through Postgres's own binary search of
//! the stored form, and values are copied out only when asked for: a batch of events is
//! validated without turning it into text and back into a tree of Rust values.

use crate::base::json_view::{JsonView, Scalar};
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgMemoryContexts};
use serde_json::Value;
use std::ffi::CStr;
use std::marker::PhantomData;

/// A jsonb datum from JSON text pg_billing made, in the current memory context.
pub fn from_text(text: &str) -> pg_sys::Datum {
    let text = std::ffi::CString::new(text).expect("JSON text has no NUL");
    // SAFETY: jsonb_in reads the NUL-terminated text, which outlives the call.
    unsafe {
        pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(text.as_ptr()))])
    }
    .expect("jsonb")
}

/// The jsonb `{}`, made once per backend (in its top memory context) and only read.
pub fn empty_object() -> pg_sys::Datum {
    thread_local! {
        // SAFETY: allocates in the top memory context, which lives as long as the backend.
        static EMPTY_OBJECT: pg_sys::Datum =
            unsafe { PgMemoryContexts::TopMemoryContext.switch_to(|_| from_text("{}")) };
    }
    EMPTY_OBJECT.with(|datum| *datum)
}

/// A detoasted `jsonb` datum. It lives in the memory context it was read (or copied) into.
pub struct PgJsonb(*mut pg_sys::Jsonb);

impl PgJsonb {
    pub fn root(&self) -> JsonbRef<'_> {
        // SAFETY: self.0 is a detoasted jsonb with a 4-byte header: its data is the root container.
        unsafe {
            let len = pgrx::varlena::varsize_any_exhdr(self.0.cast()) as i32;
            JsonbRef::container(&raw mut (*self.0).root, len)
        }
    }

    /// Copies the value into `context` so it outlives the one it was read in (an SPI result).
    pub fn copy_into(&self, context: &PgMemoryContexts) -> PgJsonb {
        // SAFETY: a plain varlena copy, allocated in a context the caller keeps alive.
        unsafe {
            let size = pgrx::varlena::varsize_any(self.0.cast());
            let copy = pg_sys::MemoryContextAlloc(context.value(), size);
            std::ptr::copy_nonoverlapping(self.0.cast::<u8>(), copy.cast::<u8>(), size);
            PgJsonb(copy.cast())
        }
    }
}

impl FromDatum for PgJsonb {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<PgJsonb> {
        // pg_detoast_datum (not the _packed form) gives the aligned 4-byte header the
        // container layout needs.
        (!is_null).then(|| unsafe { PgJsonb(pg_sys::pg_detoast_datum(datum.cast_mut_ptr()).cast()) })
    }
}

impl IntoDatum for PgJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for PgJsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null")) }
    }
}

pgrx::impl_sql_translatable!(PgJsonb, arg_only = "jsonb");

#[derive(Clone, Copy)]
enum Node {
    Container { data: *mut pg_sys::JsonbContainer, len: i32 },
    Scalar(pg_sys::JsonbValue),
}

/// One value inside a [`PgJsonb`]: a container (object or array) or a scalar.
#[derive(Clone, Copy)]
pub struct JsonbRef<'a> {
    node: Node,
    _document: PhantomData<&'a PgJsonb>,
}

impl<'a> JsonbRef<'a> {
    fn container(data: *mut pg_sys::JsonbContainer, len: i32) -> JsonbRef<'a> {
        JsonbRef { node: Node::Container { data, len }, _document: PhantomData }
    }

    fn from_value(value: pg_sys::JsonbValue) -> JsonbRef<'a> {
        if value.type_ == pg_sys::jbvType::jbvBinary {
            // SAFETY: jbvBinary carries the binary arm of the union.
            let binary = unsafe { value.val.binary };
            JsonbRef::container(binary.data, binary.len)
        } else {
            JsonbRef { node: Node::Scalar(value), _document: PhantomData }
        }
    }

    fn header(data: *mut pg_sys::JsonbContainer) -> u32 {
        // SAFETY: data points at a container of the document this ref borrows.
        unsafe { (*data).header }
    }

    /// The elements of an array (nothing for anything else).
    pub fn elements(self) -> impl Iterator<Item = JsonbRef<'a>> {
        let (data, count) = match self.node {
            Node::Container { data, .. } if Self::header(data) & pg_sys::JB_FARRAY != 0 => {
                if Self::header(data) & pg_sys::JB_FSCALAR != 0 {
                    (data, 0)
                } else {
                    (data, Self::header(data) & pg_sys::JB_CMASK)
                }
            }
            _ => (std::ptr::null_mut(), 0),
        };
        (0..count).map(move |i| {
            // SAFETY: i is below the array's element count.
            unsafe { JsonbRef::from_value(*pg_sys::getIthJsonbValueFromContainer(data, i)) }
        })
    }

    /// A raw scalar document (`'"text"'::jsonb`) is stored as a one-element array.
    fn unwrap_raw_scalar(self) -> JsonbRef<'a> {
        match self.node {
            Node::Container { data, .. } if Self::header(data) & pg_sys::JB_FSCALAR != 0 => {
                // SAFETY: a raw scalar container holds exactly one element.
                unsafe { JsonbRef::from_value(*pg_sys::getIthJsonbValueFromContainer(data, 0)) }
            }
            _ => self,
        }
    }

    fn text(value: &pg_sys::JsonbValue) -> String {
        // SAFETY: jbvString carries a pointer and a length into the document, in the database
        // encoding (UTF-8 for pg_billing's databases; anything else is replaced, not trusted).
        unsafe {
            let s = value.val.string;
            let bytes = std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize);
            String::from_utf8_lossy(bytes).into_owned()
        }
    }

    fn number(value: &pg_sys::JsonbValue) -> String {
        // SAFETY: jbvNumeric carries a numeric; numeric_normalize returns a palloc'd C string.
        unsafe {
            let text = pg_sys::numeric_normalize(value.val.numeric);
            let owned = CStr::from_ptr(text).to_string_lossy().into_owned();
            pg_sys::pfree(text.cast());
            owned
        }
    }

    /// A copy of this value as a standalone jsonb datum (one memcpy for containers).
    fn to_datum(self) -> pg_sys::Datum {
        let mut value = match self.node {
            Node::Container { data, len } => pg_sys::JsonbValue {
                type_: pg_sys::jbvType::jbvBinary,
                val: pg_sys::JsonbValue__bindgen_ty_1 {
                    binary: pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_4 { len, data },
                },
            },
            Node::Scalar(value) => value,
        };
        // SAFETY: value is a valid scalar or binary JsonbValue of this document.
        pg_sys::Datum::from(unsafe { pg_sys::JsonbValueToJsonb(&mut value) })
    }
}

impl JsonView for JsonbRef<'_> {
    fn scalar(self) -> Scalar {
        match self.unwrap_raw_scalar().node {
            Node::Container { data, .. } if Self::header(data) & pg_sys::JB_FOBJECT != 0 => Scalar::Object,
            Node::Container { .. } => Scalar::Array,
            Node::Scalar(value) => match value.type_ {
                pg_sys::jbvType::jbvString => Scalar::Text(Self::text(&value)),
                pg_sys::jbvType::jbvNumeric => Scalar::Number(Self::number(&value)),
                // SAFETY: jbvBool carries the boolean arm.
                pg_sys::jbvType::jbvBool => Scalar::Bool(unsafe { value.val.boolean }),
                _ => Scalar::Null,
            },
        }
    }

    fn get(self, key: &str) -> Option<Self> {
        let Node::Container { data, .. } = self.node else { return None };
        if Self::header(data) & pg_sys::JB_FOBJECT == 0 {
            return None;
        }
        let mut found = std::mem::MaybeUninit::<pg_sys::JsonbValue>::uninit();
        // SAFETY: a lookup in an object container; the result is written into `found`.
        let value = unsafe {
            pg_sys::getKeyJsonValueFromContainer(data, key.as_ptr().cast(), key.len() as i32, found.as_mut_ptr())
        };
        // SAFETY: non-null means `found` was filled in.
        (!value.is_null()).then(|| JsonbRef::from_value(unsafe { found.assume_init() }))
    }

    fn len(self) -> usize {
        match self.unwrap_raw_scalar().node {
            Node::Container { data, .. } => (Self::header(data) & pg_sys::JB_CMASK) as usize,
            Node::Scalar(_) => 0,
        }
    }

    fn keys(self) -> Vec<String> {
        let Node::Container { data, .. } = self.node else { return Vec::new() };
        let mut keys = Vec::new();
        // SAFETY: Postgres's iterator over the container, top level only.
        unsafe {
            let mut iterator = pg_sys::JsonbIteratorInit(data);
            let mut value = std::mem::MaybeUninit::<pg_sys::JsonbValue>::uninit();
            loop {
                match pg_sys::JsonbIteratorNext(&mut iterator, value.as_mut_ptr(), true) {
                    pg_sys::JsonbIteratorToken::WJB_DONE => break,
                    pg_sys::JsonbIteratorToken::WJB_KEY => keys.push(Self::text(value.assume_init_ref())),
                    _ => {}
                }
            }
        }
        keys
    }

    fn same(self, other: Self) -> bool {
        match (self.node, other.node) {
            // SAFETY: both are containers of live documents; 0 means equal, as jsonb's `=`.
            (Node::Container { data: a, .. }, Node::Container { data: b, .. }) => unsafe {
                pg_sys::compareJsonbContainers(a, b) == 0
            },
            _ => self.to_value() == other.to_value(),
        }
    }

    fn to_value(self) -> Value {
        match self.node {
            Node::Container { .. } => {
                // serde_json stops at 128 levels (and would recurse without bound past that):
                // deeper values, which validation rejects before reading, are kept as text.
                let text = self.to_text();
                if self.depth(SERDE_DEPTH) > SERDE_DEPTH {
                    return Value::String(text);
                }
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
            Node::Scalar(_) => match self.scalar() {
                Scalar::Null => Value::Null,
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Number(n) => serde_json::from_str(&n).unwrap_or(Value::String(n)),
                Scalar::Text(s) => Value::String(s),
                Scalar::Array | Scalar::Object => unreachable!("scalar nodes are not containers"),
            },
        }
    }

    fn to_text(self) -> String {
        match self.node {
            // SAFETY: JsonbToCString renders the container (iteratively, at any depth) into a
            // palloc'd buffer.
            Node::Container { data, len } => unsafe {
                let rendered = pg_sys::JsonbToCString(std::ptr::null_mut(), data, len);
                let owned = CStr::from_ptr(rendered).to_string_lossy().into_owned();
                pg_sys::pfree(rendered.cast());
                owned
            },
            Node::Scalar(_) => match self.scalar() {
                Scalar::Null => "null".to_string(),
                Scalar::Bool(b) => b.to_string(),
                Scalar::Number(n) => n,
                Scalar::Text(s) => Value::String(s).to_string(),
                Scalar::Array | Scalar::Object => unreachable!("scalar nodes are not containers"),
            },
        }
    }

    fn depth(self, limit: usize) -> usize {
        let Node::Container { data, .. } = self.node else { return 0 };
        let mut deepest = 0;
        let mut pending: Vec<(*const pg_sys::JsonbContainer, usize)> = vec![(data, 1)];
        while let Some((container, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            if deepest > limit {
                break;
            }
            // SAFETY: container is a container of this document; its JEntries say which
            // children are containers, and where their data starts (as fillJsonbValue finds
            // it: the data area after the JEntries, at the child's offset aligned to 4).
            unsafe {
                let header = (*container).header;
                let count = (header & pg_sys::JB_CMASK) as usize;
                let (first, entries) = if header & pg_sys::JB_FOBJECT != 0 { (count, 2 * count) } else { (0, count) };
                let children = (*container).children.as_ptr();
                let base = children.add(entries).cast::<u8>();
                for index in first..entries {
                    if *children.add(index) & pg_sys::JENTRY_TYPEMASK == pg_sys::JENTRY_ISCONTAINER {
                        let offset = pg_sys::getJsonbOffset(container, index as i32) as usize;
                        let child = base.add((offset + 3) & !3).cast::<pg_sys::JsonbContainer>();
                        pending.push((child, depth + 1));
                    }
                }
            }
        }
        deepest
    }

    fn stored_size(self) -> usize {
        match self.node {
            Node::Container { len, .. } => len as usize,
            Node::Scalar(_) => self.to_text().len(),
        }
    }
}

/// The deepest value `to_value` hands to serde_json, which refuses more than 128 levels.
const SERDE_DEPTH: usize = 100;

impl IntoDatum for JsonbRef<'_> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.to_datum())
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}
