//! The errors of the data model, by DynamoDB's exception names.

/// Which DynamoDB exception an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ValidationException` (400).
    Validation,
    /// `SerializationException` (400): the JSON does not have the shape of
    /// the request.
    Serialization,
    /// `ConditionalCheckFailedException` (400).
    ConditionalCheckFailed,
}

/// An error, with DynamoDB's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DdbError {
    /// The exception.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
    /// For a failed condition with `ReturnValuesOnConditionCheckFailure =
    /// ALL_OLD`: the item as it was, in wire form.
    pub item: Option<serde_json::Value>,
}

impl DdbError {
    /// A `ValidationException`.
    pub fn validation(message: impl Into<String>) -> DdbError {
        DdbError {
            kind: ErrorKind::Validation,
            message: message.into(),
            item: None,
        }
    }

    /// A `ValidationException` about invalid parameter values, worded as
    /// DynamoDB words them.
    pub fn invalid_parameter(detail: impl std::fmt::Display) -> DdbError {
        DdbError::validation(format!(
            "One or more parameter values were invalid: {detail}"
        ))
    }

    /// A `SerializationException`.
    pub fn serialization(message: impl Into<String>) -> DdbError {
        DdbError {
            kind: ErrorKind::Serialization,
            message: message.into(),
            item: None,
        }
    }

    /// A `ConditionalCheckFailedException`, with the old item if asked for.
    pub fn condition_failed(item: Option<serde_json::Value>) -> DdbError {
        DdbError {
            kind: ErrorKind::ConditionalCheckFailed,
            message: "The conditional request failed".to_owned(),
            item,
        }
    }
}

/// A result with a [`DdbError`].
pub type DdbResult<T> = Result<T, DdbError>;
