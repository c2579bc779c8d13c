//! `Strict<T>`: a request body with poem-openapi's schema and validators, whose type errors
//! name the field. poem-openapi reports a wrong type or a missing field without saying which
//! field ("Expected input type \"integer_int32\", found \"x\""); a serde pass first turns
//! that into "field `max_retry`: invalid type: string \"x\", expected i32".

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, Type};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Strict<T>(pub T);

impl<T: Type> Type for Strict<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        self.0.raw_element_iter()
    }
}

impl<T: ParseFromJSON + DeserializeOwned> ParseFromJSON for Strict<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        if !value.is_object() {
            // serde would read an array as a struct's fields in order.
            return Err(ParseError::custom("the body must be a JSON object"));
        }
        if let Err(e) = serde_path_to_error::deserialize::<_, T>(&value) {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let message = if path == "." || path.is_empty() {
                inner
            } else {
                format!("field `{path}`: {inner}")
            };
            return Err(ParseError::custom(message));
        }
        T::parse_from_json(Some(value))
            .map(Strict)
            .map_err(ParseError::propagate)
    }
}
