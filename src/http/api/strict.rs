//! `Strict<T>`: a request body with poem-openapi's schema and validators, whose type errors
//! name the field. poem-openapi reports a wrong type or a missing field without saying which
//! field ("Expected input type \"integer_int32\", found \"x\""); a serde pass first turns
//! that into "field `max_retry`: invalid type: string \"x\", expected i32".
//! `OptionalJson<T>`: the same for a body a request may leave out.

use std::borrow::Cow;

use poem::{FromRequest, Request, RequestBody};
use poem_openapi::error::{ContentTypeError, ParseRequestPayloadError};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, Type};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
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

/// An optional JSON request body. A request without one (zero bytes, whatever its content
/// type) gives `None`; any body must be `application/json` (415 otherwise) and is parsed like
/// [`Strict`], so unknown fields and wrong types are 400s naming the field.
pub struct OptionalJson<T>(pub Option<T>);

impl<'a, T> ApiExtractor<'a> for OptionalJson<T>
where
    T: Type + ParseFromJSON + DeserializeOwned + Send,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Json<T> as Payload>::CONTENT_TYPE,
                schema: T::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        if data.is_empty() {
            return Ok(OptionalJson(None));
        }
        match request.content_type() {
            Some(ct) if <Json<T> as Payload>::check_content_type(ct) => {}
            Some(ct) => {
                return Err(ContentTypeError::NotSupported {
                    content_type: ct.to_string(),
                }
                .into())
            }
            None => return Err(ContentTypeError::ExpectContentType.into()),
        }
        let value: Value = serde_json::from_slice(&data).map_err(|e| ParseRequestPayloadError {
            reason: e.to_string(),
        })?;
        let parsed =
            Strict::<T>::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
                reason: e.into_message(),
            })?;
        Ok(OptionalJson(Some(parsed.0)))
    }
}

/// A request body that is one JSON object or a list of them (`MAX` at most, as the schema
/// says; the handler refuses a longer list with a 422 naming the limit). The object, and
/// each item of a list, is parsed like [`Strict`]; an item's errors name it by position:
/// `field `[3].max_retry`: ...`.
pub enum OneOrMany<T, const MAX: usize> {
    One(T),
    Many(Vec<T>),
}

impl<T: Type + ParseFromJSON + DeserializeOwned, const MAX: usize> OneOrMany<T, MAX> {
    fn schema() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            one_of: vec![
                T::schema_ref(),
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    items: Some(Box::new(T::schema_ref())),
                    max_items: Some(MAX),
                    ..MetaSchema::new("array")
                })),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn parse(value: Value) -> Result<Self, String> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| Self::item(i, item))
                .collect::<Result<Vec<T>, String>>()
                .map(OneOrMany::Many),
            value => Strict::<T>::parse_from_json(Some(value))
                .map(|s| OneOrMany::One(s.0))
                .map_err(|e| e.into_message()),
        }
    }

    fn item(i: usize, item: Value) -> Result<T, String> {
        if !item.is_object() {
            return Err(format!("field `[{i}]`: each item must be a JSON object"));
        }
        Strict::<T>::parse_from_json(Some(item))
            .map(|s| s.0)
            .map_err(|e| {
                let message = e.into_message();
                if message.contains("field `") {
                    message.replacen("field `", &format!("field `[{i}]."), 1)
                } else {
                    format!("field `[{i}]`: {message}")
                }
            })
    }
}

impl<'a, T, const MAX: usize> ApiExtractor<'a> for OneOrMany<T, MAX>
where
    T: Type + ParseFromJSON + DeserializeOwned + Send,
{
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Json<T> as Payload>::CONTENT_TYPE,
                schema: Self::schema(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(ct) if <Json<T> as Payload>::check_content_type(ct) => {}
            Some(ct) => {
                return Err(ContentTypeError::NotSupported {
                    content_type: ct.to_string(),
                }
                .into())
            }
            None => return Err(ContentTypeError::ExpectContentType.into()),
        }
        let data = <Vec<u8> as FromRequest>::from_request(request, body).await?;
        let value = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&data).map_err(|e| ParseRequestPayloadError {
                reason: e.to_string(),
            })?
        };
        Self::parse(value).map_err(|reason| ParseRequestPayloadError { reason }.into())
    }
}
