//! The calls `virtlockctl` makes: one connection to the admin socket, the
//! inspection program's procedures.

use std::path::Path;

use bytes::Bytes;

use crate::client::{Client, ClientError};
use crate::protocol::inspect::{self, procedure, ClientView, LeaseView, StatusView};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: ClientError,
    },
    #[error("{0}")]
    Call(#[from] ClientError),
    #[error("malformed reply: {0}")]
    Decode(#[from] crate::protocol::xdr::XdrError),
}

pub struct Inspector {
    client: Client,
}

impl Inspector {
    pub async fn connect(socket: &Path) -> Result<Self, QueryError> {
        let client = Client::connect(socket)
            .await
            .map_err(|source| QueryError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
        Ok(Self { client })
    }

    async fn call(&mut self, proc_: i32) -> Result<Bytes, QueryError> {
        self.call_with(proc_, Bytes::new()).await
    }

    async fn call_with(&mut self, proc_: i32, args: Bytes) -> Result<Bytes, QueryError> {
        Ok(self
            .client
            .call_program(inspect::PROGRAM, inspect::VERSION, proc_, args)
            .await?)
    }

    /// Releases the lease of an unknown owner on `path`.
    pub async fn release_unknown(&mut self, path: &[u8]) -> Result<(), QueryError> {
        self.call_with(
            procedure::RELEASE_UNKNOWN,
            inspect::release_unknown_args(path),
        )
        .await
        .map(drop)
    }

    pub async fn leases(&mut self) -> Result<Vec<LeaseView>, QueryError> {
        Ok(inspect::decode_leases(
            &self.call(procedure::LIST_LOCKS).await?,
        )?)
    }

    pub async fn clients(&mut self) -> Result<Vec<ClientView>, QueryError> {
        Ok(inspect::decode_clients(
            &self.call(procedure::LIST_CLIENTS).await?,
        )?)
    }

    pub async fn status(&mut self) -> Result<StatusView, QueryError> {
        Ok(StatusView::decode(&self.call(procedure::STATUS).await?)?)
    }
}
