//! Wire codec of the direct-message protocol `/infermesh/direct/1.0.0`:
//! one length-prefixed (unsigned varint) envelope per request, one
//! length-prefixed CBOR [`Ack`] per response. The length is checked against
//! the limit before any byte of the body is read.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use serde::{Deserialize, Serialize};

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/direct/1.0.0");

/// Largest encoded acknowledgement.
const MAX_ACK_BYTES: usize = 4096;

/// A request as read off the wire.
#[derive(Debug)]
pub(crate) enum DirectRequest {
    /// The envelope's bytes, at most the limit.
    Frame(Vec<u8>),
    /// The peer announced this many bytes, over the limit; none were read.
    Oversize(u64),
}

/// The receiver's answer to a direct message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The envelope ID (empty when the envelope could not be decoded).
    pub id: String,
    /// `None` when accepted; otherwise the rejection reason label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct DirectCodec {
    max_request_bytes: usize,
}

impl DirectCodec {
    pub(crate) fn new(max_request_bytes: usize) -> Self {
        Self { max_request_bytes }
    }
}

async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<u64> {
    unsigned_varint::aio::read_u64(io).await.map_err(|e| match e {
        unsigned_varint::io::ReadError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    })
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let mut len = unsigned_varint::encode::u64_buffer();
    io.write_all(unsigned_varint::encode::u64(body.len() as u64, &mut len)).await?;
    io.write_all(body).await?;
    io.close().await
}

impl request_response::Codec for DirectCodec {
    type Protocol = StreamProtocol;
    type Request = DirectRequest;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<DirectRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io).await?;
        if len > self.max_request_bytes as u64 {
            return Ok(DirectRequest::Oversize(len));
        }
        let mut body = vec![0u8; len as usize];
        io.read_exact(&mut body).await?;
        Ok(DirectRequest::Frame(body))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io).await?;
        if len > MAX_ACK_BYTES as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("ack of {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        io.read_exact(&mut body).await?;
        ciborium::from_reader(&body[..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: DirectRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            DirectRequest::Frame(body) => write_frame(io, &body).await,
            DirectRequest::Oversize(_) => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "an oversize request has no body to send"))
            }
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Ack) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let mut body = Vec::with_capacity(64);
        ciborium::into_writer(&res, &mut body).map_err(|e| io::Error::other(e.to_string()))?;
        write_frame(io, &body).await
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use futures::{executor::block_on, io::Cursor};
    use libp2p::request_response::Codec as _;

    use super::*;

    #[test]
    fn frames_round_trip_and_limit_is_checked_before_reading() {
        block_on(async {
            let mut codec = DirectCodec::new(16);
            let mut wire = Cursor::new(Vec::new());
            codec.write_request(&PROTOCOL, &mut wire, DirectRequest::Frame(b"hello".to_vec())).await.unwrap();
            let mut read = Cursor::new(wire.into_inner());
            match codec.read_request(&PROTOCOL, &mut read).await.unwrap() {
                DirectRequest::Frame(body) => assert_eq!(body, b"hello"),
                other => panic!("unexpected {other:?}"),
            }

            // A header announcing 1 GiB, followed by nothing: reported, not read.
            let mut len = unsigned_varint::encode::u64_buffer();
            let header = unsigned_varint::encode::u64(1 << 30, &mut len).to_vec();
            let mut read = Cursor::new(header);
            assert!(matches!(
                codec.read_request(&PROTOCOL, &mut read).await.unwrap(),
                DirectRequest::Oversize(n) if n == 1 << 30
            ));

            // An endless varint and a short body are errors, not panics.
            let mut read = Cursor::new(vec![0xff; 32]);
            assert!(codec.read_request(&PROTOCOL, &mut read).await.is_err());
            let mut read = Cursor::new(vec![10, 1, 2]);
            assert!(codec.read_request(&PROTOCOL, &mut read).await.is_err());
        });
    }

    #[test]
    fn acks_round_trip() {
        block_on(async {
            let mut codec = DirectCodec::new(16);
            let ack = Ack { id: "abc".into(), rejected: Some("expired".into()) };
            let mut wire = Cursor::new(Vec::new());
            codec.write_response(&PROTOCOL, &mut wire, ack.clone()).await.unwrap();
            let mut read = Cursor::new(wire.into_inner());
            assert_eq!(codec.read_response(&PROTOCOL, &mut read).await.unwrap(), ack);
        });
    }
}
