//! The Redis client Portico's replicas share state through, and the Redis
//! implementations of the portal's shared-state traits.
//!
//! [`Redis`] is one cloneable handle per gateway: a `redis` crate
//! [`ConnectionManager`] (one multiplexed connection, re-established in the background
//! after Redis restarts), the deployment's key prefix, a bound on every command
//! ([`Settings::command_timeout`]: a command past it is an error, never a hang), and a
//! [`Sealer`] that encrypts values holding tokens or patient data (XChaCha20-Poly1305,
//! a random nonce per value, the Redis key as associated data) and names keys by a
//! keyed digest of what identifies them, so that whoever can list the keys learns no
//! patient or resource id.
//!
//! The stores: [`RedisIdempotencyStore`] (`portico_portal::IdempotencyStore`),
//! [`RedisLocks`] (`portico_portal::Locks`) and [`RedisOffers`]
//! (`portico_portal::Offers`), each passing the same contract suite as its memory
//! counterpart (`portico_portal::contract`). The login's session store lives with the
//! login in the `portico` binary and uses this client the same way.
//!
//! Invariants:
//! - every failure to get an answer from Redis is a [`RedisError`] saying "Redis
//!   unavailable", which callers turn into a 503; nothing falls back to acting without
//!   the shared state;
//! - a value sealed under one key cannot be opened under another, nor with another
//!   encryption key ([`RedisError::Unreadable`]);
//! - errors and logs never carry keys, values, tokens or patient data.
//!
//! Building a [`Redis`] does no I/O: the first command connects. A Redis that is down
//! when the gateway starts therefore does not stop it; requests that need shared state
//! answer 503 until Redis is back.
//!
//! Needs Redis 7.0 or later (or Valkey): `SET … NX GET`, `GETDEL`.

mod error;
mod generations;
mod idempotency;
mod locks;
mod offers;
mod seal;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, ScriptInvocation};

/// The `redis` crate, for stores built on [`Redis`] elsewhere (scripts, commands).
pub use redis;

pub use error::RedisError;
pub use generations::RedisGenerations;
pub use idempotency::RedisIdempotencyStore;
pub use locks::RedisLocks;
pub use offers::RedisOffers;
pub use seal::Sealer;

/// How to reach Redis and protect what goes there.
#[derive(Clone)]
pub struct Settings {
    /// `redis://host:port/db` or `rediss://…` (TLS), without a password.
    pub url: url::Url,
    /// The ACL user, if not the default one.
    pub username: Option<String>,
    /// The ACL password.
    pub password: Option<String>,
    /// Prepended to every key.
    pub key_prefix: String,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long one command may take before it is an error.
    pub command_timeout: Duration,
    /// The key values are sealed with (and key names derived from).
    pub encryption_key: [u8; 32],
}

/// No password, no key.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.url.host_str())
            .field("port", &self.url.port())
            .field("tls", &(self.url.scheme() == "rediss"))
            .field("username", &self.username)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// The shared Redis client. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct Redis {
    /// For connections of their own (the generations' subscription).
    client: redis::Client,
    connection: ConnectionManager,
    prefix: Arc<str>,
    connect_timeout: Duration,
    command_timeout: Duration,
    sealer: Arc<Sealer>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client for `settings`, without connecting: the first command connects, and a
    /// lost connection is re-established in the background. Must be called inside a
    /// Tokio runtime.
    pub fn new(settings: &Settings) -> Result<Redis, RedisError> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| RedisError::Config(e.to_string()))?;
        let mut redis_info = info.redis_settings().clone();
        if let Some(username) = &settings.username {
            redis_info = redis_info.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password);
        }
        info = info.set_redis_settings(redis_info);
        let client = redis::Client::open(info).map_err(|e| RedisError::Config(e.to_string()))?;
        // Reconnection: a few quick attempts per lost connection; the next command
        // starts another round if they all fail, so a Redis that comes back is used
        // again without rebuilding anything. Each command is bounded by
        // `command_timeout` whatever the connection is doing.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| RedisError::Config(e.to_string()))?;
        Ok(Redis {
            client,
            connection,
            prefix: settings.key_prefix.as_str().into(),
            connect_timeout: settings.connect_timeout,
            command_timeout: settings.command_timeout,
            sealer: Arc::new(Sealer::new(&settings.encryption_key)),
        })
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(RedisError::Unavailable(
                "unexpected answer to PING".to_owned(),
            ))
        }
    }

    /// The full key of `name` in the keyspace `kind`: `{prefix}{kind}:{name}`. `name`
    /// must identify nothing by itself (a [`Sealer::name`] digest, a random value).
    pub fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    /// The sealer for values and key names.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// How long one command may take.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// Runs one command, bounded by the command timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(cmd.query_async(&mut connection)).await
    }

    /// Runs a pipeline (`MULTI`/`EXEC` when built with `atomic()`), bounded by the
    /// command timeout.
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(pipeline.query_async(&mut connection)).await
    }

    /// Runs a Lua script (`EVALSHA`, loading it first after a restart emptied the
    /// script cache), bounded by the command timeout.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection.clone();
        self.bounded(invocation.invoke_async(&mut connection)).await
    }

    /// A connection of its own subscribed to `channel` (RESP2 pub/sub): its sink, and
    /// the stream of messages, which ends when the connection is lost. Connecting and
    /// subscribing are bounded by the connect and command timeouts.
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), RedisError> {
        let connecting = tokio::time::timeout(self.connect_timeout, self.client.get_async_pubsub());
        let pubsub = match connecting.await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(RedisError::from(e)),
            Err(_) => return Err(RedisError::Timeout(self.connect_timeout)),
        };
        let (mut sink, stream) = pubsub.split();
        self.bounded(sink.subscribe(channel)).await?;
        Ok((sink, stream))
    }

    async fn bounded<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.command_timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisError::from(e)),
            Err(_) => Err(RedisError::Timeout(self.command_timeout)),
        }
    }
}

/// A random value, hex-encoded (lock tokens, running-record owners).
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex(&buf)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds for `PX`, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
