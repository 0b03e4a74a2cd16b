//! How every input of the API is read: one rule for the REST bodies and the MCP tool arguments.
//!
//! - An input is a JSON **object**. serde's derived structs also accept an array, field by field
//!   in declaration order, so `["x"]` would create a stream named `x` and `[null, null]` an
//!   invite: [`from_json`] refuses anything but an object before serde sees it (MCP arguments are
//!   an object by protocol).
//! - Unknown fields are refused (`#[serde(deny_unknown_fields)]` on every input type), so a typo
//!   never turns into a default.
//! - A field whose `null` means something (clearing a setting) must be given: serde reads a
//!   missing `Option` as `None`, which would make `{}` clear the setting. Such fields carry
//!   `#[serde(deserialize_with = "input::present")]` and `#[schemars(with =
//!   "input::Nullable<T>")]`, so `{}` is refused and the schema lists the field as required and
//!   nullable.
//! - Partial updates take `Option<Option<T>>` with `#[serde(default, deserialize_with =
//!   "input::patch")]`: absent leaves the value alone, `null` clears it, a value sets it. Fields
//!   that cannot be cleared take `input::set`, which refuses `null`.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::api::ApiError;

/// Reads one input from a JSON body: an object, with nothing after it. Every refusal is a 400
/// that says where the body is wrong.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The first significant byte tells an object from anything else without parsing twice.
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object, like {\"name\": \"main\"}".into(),
        ));
    }
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if at == "." || at.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("invalid JSON body at {at}: {inner}"))
        }
    })?;
    json.end()
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// For `Option<T>` fields that must be present, `null` being a value of its own (see the module
/// doc). With `deserialize_with`, serde reports a missing field instead of defaulting it.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// For `Option<T>` fields of partial updates that cannot be cleared, with `#[serde(default)]`
/// and `#[schemars(with = "T")]`: absent leaves the value alone, `null` is refused (it would
/// otherwise read as "leave it", which is not what a client sending `null` meant).
pub fn set<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// For `Option<Option<T>>` fields of partial updates, with `#[serde(default)]`: absent is `None`
/// (leave it), `null` is `Some(None)` (clear it), a value is `Some(Some(value))`.
pub fn patch<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The schema of a [`present`] field: `T` or `null`, and required (schemars leaves `Option`
/// fields out of `required`, which is right for every other optional field).
pub struct Nullable<T>(PhantomData<T>);

impl<T: JsonSchema> JsonSchema for Nullable<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Nullable_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        Option::<T>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// A body is taken exactly when it is one JSON object and nothing else; any bytes are
        /// refused with a 400 rather than a panic.
        #[test]
        fn a_body_is_one_json_object_or_a_400(
            text in "[ \t\r\n]{0,2}(\\{|\\[|\"|1|n|t)[ a-z0-9\":,{}\\[\\]]{0,30}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            type Object = serde_json::Map<String, serde_json::Value>;
            let ours = from_json::<Object>(text.as_bytes()).is_ok();
            let reference = serde_json::from_slice::<Object>(text.as_bytes()).is_ok();
            proptest::prop_assert_eq!(ours, reference, "{:?}", text);
            if let Err(e) = from_json::<Object>(&bytes) {
                proptest::prop_assert!(matches!(e, ApiError::BadRequest(_)));
            }
        }
    }

    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pick {
        #[serde(deserialize_with = "present")]
        #[schemars(with = "Nullable<String>")]
        cluster_id: Option<String>,
        note: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default, deserialize_with = "patch")]
        price: Option<Option<i64>>,
        #[serde(default, deserialize_with = "set")]
        name: Option<String>,
    }

    fn read<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        from_json(text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn only_objects_are_inputs() {
        for body in [
            "[\"x\"]",
            "[null, null]",
            "null",
            "\"x\"",
            "1",
            "",
            "  ",
            "true",
        ] {
            let refused = read::<Pick>(body).expect_err(body);
            assert!(refused.contains("JSON object"), "{body}: {refused}");
        }
        assert_eq!(
            read::<Pick>(" \n{\"cluster_id\": \"eu\"}"),
            Ok(Pick {
                cluster_id: Some("eu".into()),
                note: None
            })
        );
        assert!(
            read::<Pick>("{\"cluster_id\": \"eu\"} {}").is_err(),
            "one value"
        );
        assert!(read::<Pick>("{\"cluster_id\": \"eu\", \"clusterid\": 1}")
            .expect_err("typo")
            .contains("unknown field"));
    }

    #[test]
    fn present_fields_must_be_given_and_null_is_a_value() {
        let missing = read::<Pick>("{}").expect_err("missing");
        assert!(missing.contains("missing field `cluster_id`"), "{missing}");
        assert_eq!(
            read::<Pick>("{\"cluster_id\": null}"),
            Ok(Pick {
                cluster_id: None,
                note: None
            })
        );
        let schema = serde_json::to_value(schemars::schema_for!(Pick)).expect("schema");
        assert_eq!(schema["required"], json!(["cluster_id"]), "{schema}");
        assert_eq!(
            schema["properties"]["cluster_id"]["type"],
            json!(["string", "null"]),
            "{schema}"
        );
    }

    #[test]
    fn patches_tell_absent_from_null() {
        let none = Patch {
            price: None,
            name: None,
        };
        assert_eq!(read::<Patch>("{}"), Ok(none));
        assert_eq!(
            read::<Patch>("{\"price\": null}"),
            Ok(Patch {
                price: Some(None),
                name: None
            })
        );
        assert_eq!(
            read::<Patch>("{\"price\": 5, \"name\": \"x\"}"),
            Ok(Patch {
                price: Some(Some(5)),
                name: Some("x".into())
            })
        );
        let refused = read::<Patch>("{\"name\": null}").expect_err("null name");
        assert!(refused.contains("invalid type: null"), "{refused}");
    }
}
