//! The in-place jsonb reader against values built by Postgres's own jsonb input.

#[pgrx::pg_schema]
mod tests {
    use crate::base::json_view::{JsonView, Scalar};
    use crate::pg::jsonb::PgJsonb;
    use pgrx::prelude::*;
    use serde_json::json;
    use std::ffi::CString;

    /// A jsonb value parsed by jsonb_in, in the test's memory context.
    fn jsonb(text: &str) -> PgJsonb {
        let text = CString::new(text).unwrap();
        unsafe {
            let datum = pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[text.as_c_str().into_datum()])
                .expect("valid jsonb");
            PgJsonb::from_datum(datum, false).unwrap()
        }
    }

    #[pg_test]
    fn reads_scalars_by_key() {
        let doc = jsonb(r#"{"s": "Île-de-France", "n": 1.50, "e": 1.5e2, "b": true, "z": null, "a": [1], "o": {}}"#);
        let object = doc.root();
        let get = |key: &str| object.get(key).map(JsonView::scalar);
        assert_eq!(object.scalar(), Scalar::Object);
        assert_eq!(get("s"), Some(Scalar::Text("Île-de-France".into())));
        assert_eq!(get("n"), Some(Scalar::Number("1.5".into())));
        assert_eq!(get("e"), Some(Scalar::Number("150".into())));
        assert_eq!(get("b"), Some(Scalar::Bool(true)));
        assert_eq!(get("z"), Some(Scalar::Null));
        assert_eq!(get("a"), Some(Scalar::Array));
        assert_eq!(get("o"), Some(Scalar::Object));
        assert_eq!(get("missing"), None);
        assert_eq!(object.len(), 7);
        // jsonb stores keys shortest first, then bytewise.
        assert_eq!(object.keys(), ["a", "b", "e", "n", "o", "s", "z"]);
        assert!(object.get("o").unwrap().is_empty());
    }

    #[pg_test]
    fn reads_arrays_and_raw_scalars() {
        let doc = jsonb(r#"[1, "x", [2, 3], {"k": false}]"#);
        let elements: Vec<Scalar> = doc.root().elements().map(JsonView::scalar).collect();
        assert_eq!(elements, [Scalar::Number("1".into()), Scalar::Text("x".into()), Scalar::Array, Scalar::Object]);
        assert_eq!(doc.root().elements().nth(2).unwrap().len(), 2);
        assert_eq!(doc.root().elements().nth(3).unwrap().get("k").unwrap().scalar(), Scalar::Bool(false));

        let raw = jsonb(r#""just text""#);
        assert_eq!(raw.root().scalar(), Scalar::Text("just text".into()));
        assert_eq!(raw.root().elements().count(), 0, "a raw scalar is not an array");
        assert!(raw.root().get("k").is_none());
        assert_eq!(jsonb("42").root().to_value(), json!(42));
    }

    #[pg_test]
    fn compares_as_jsonb_equality() {
        let a = jsonb(r#"{"a": 1, "b": [1, {"c": "d"}]}"#);
        let same = jsonb(r#"{"b": [1.0, {"c": "d"}], "a": 1.00}"#);
        let other = jsonb(r#"{"a": 2, "b": [1, {"c": "d"}]}"#);
        assert!(a.root().same(same.root()));
        assert!(!a.root().same(other.root()));
        assert!(a.root().get("b").unwrap().same(same.root().get("b").unwrap()));
        assert!(a.root().get("a").unwrap().same(same.root().get("a").unwrap()));
    }

    #[pg_test]
    fn copies_out_values_and_nested_containers() {
        let doc = jsonb(r#"{"outer": {"list": [1, "two", null], "flag": true}, "n": 7}"#);
        let outer = doc.root().get("outer").unwrap();
        assert_eq!(outer.to_value(), json!({"list": [1, "two", null], "flag": true}));
        assert_eq!(doc.root().get("n").unwrap().to_value(), json!(7));
        // A nested container becomes a standalone jsonb datum equal to it.
        let datum = outer.into_datum().unwrap();
        let copy = unsafe { PgJsonb::from_datum(datum, false).unwrap() };
        assert!(copy.root().same(outer));
        assert_eq!(copy.root().to_value(), outer.to_value());
    }
}
