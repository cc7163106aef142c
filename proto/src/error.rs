//! Errors raised at the wire boundary and by domain-type validation.

/// What went wrong converting or validating a contract type.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("unknown {name} {value:?}")]
    InvalidEnum { name: &'static str, value: String },
    /// A peer sent more than the receiver holds for it: `what` was too much, by `limit`.
    #[error("{what} exceeds {limit}")]
    LimitExceeded { what: String, limit: String },
}

impl ProtoError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ProtoError> for tonic::Status {
    fn from(err: ProtoError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}
