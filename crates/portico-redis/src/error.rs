//! [`RedisError`]: why Redis did not give an answer the gateway can use.

use std::time::Duration;

use portico_portal::StateError;

/// Why a Redis operation failed. Messages name no key, value or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// No connection, a dropped connection, or an error answer.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// No answer within the command timeout.
    #[error("Redis unavailable: no answer within {0:?}")]
    Timeout(Duration),
    /// A value that does not open under its key with this encryption key (written with
    /// another key, moved between keys, or tampered with), or that does not decode.
    #[error("a value in Redis cannot be read (another encryption key, or altered)")]
    Unreadable,
    /// The client cannot be built from the settings.
    #[error("the Redis settings are invalid: {0}")]
    Config(String),
}

impl RedisError {
    /// Whether the failure is Redis not answering (as opposed to a value it answered
    /// with being unreadable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RedisError::Unavailable(_) | RedisError::Timeout(_))
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            return RedisError::Unavailable("no answer in time".to_owned());
        }
        // The kind and the server's or the OS's words; never the command's arguments.
        RedisError::Unavailable(e.to_string())
    }
}

impl From<RedisError> for StateError {
    fn from(e: RedisError) -> StateError {
        StateError::Unavailable(e.to_string())
    }
}
