//! Wire format of the direct-message protocol `/infermesh/direct/2.0.0`.
//!
//! A connection carries direct messages on one long-lived stream per
//! direction: the sender writes request frames one after another, without
//! waiting, and the receiver answers each with an acknowledgement frame on
//! the same stream, in any order.
//!
//! ```text
//! frame = uvarint(seq) uvarint(len) body[len]
//! ```
//!
//! `seq` ties an acknowledgement to its request. A request body is one
//! encoded envelope; an acknowledgement body is a CBOR [`Ack`]. The length
//! is checked before any of the body is buffered: a request over the limit
//! is reported as [`Frame::Oversize`] and its bytes are discarded as they
//! arrive, so the sender hears why and the stream carries on; an oversize
//! acknowledgement, or a malformed header, ends the stream.

use std::io;

use asynchronous_codec::{Decoder, Encoder};
use bytes::{Buf, BufMut, BytesMut};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The protocol name.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/infermesh/direct/2.0.0");

/// Largest encoded acknowledgement.
pub(crate) const MAX_ACK_BYTES: usize = 4096;

/// A request as handed to the application.
#[derive(Debug)]
pub(crate) enum DirectRequest {
    /// The envelope's bytes, at most the limit.
    Frame(Vec<u8>),
    /// The peer announced this many bytes, over the limit; none were kept.
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

impl Ack {
    /// The acknowledgement's frame body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64);
        // Writing CBOR into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut body);
        body
    }

    /// Reads an acknowledgement's frame body.
    pub(crate) fn decode(body: &[u8]) -> io::Result<Ack> {
        ciborium::from_reader(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }
}

/// One frame read off a stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole frame within the limit.
    Body { seq: u64, body: BytesMut },
    /// A frame announced `len` bytes, over the limit; they are skipped.
    Oversize { seq: u64, len: u64 },
}

/// Frames on one stream, in both directions.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    max_body: usize,
    /// Report oversize frames and skip them (requests), or fail (acks).
    skip_oversize: bool,
    /// Bytes of an oversize frame still to discard.
    skipping: u64,
}

impl FrameCodec {
    /// For a stream that reads requests of at most `max_body` bytes.
    pub(crate) fn requests(max_body: usize) -> Self {
        Self { max_body, skip_oversize: true, skipping: 0 }
    }

    /// For a stream that reads acknowledgements.
    pub(crate) fn acks() -> Self {
        Self { max_body: MAX_ACK_BYTES, skip_oversize: false, skipping: 0 }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Reads one unsigned varint; `None` when more bytes are needed.
fn uvarint(bytes: &[u8]) -> io::Result<Option<(u64, &[u8])>> {
    match unsigned_varint::decode::u64(bytes) {
        Ok(read) => Ok(Some(read)),
        Err(unsigned_varint::decode::Error::Insufficient) => Ok(None),
        Err(e) => Err(invalid(format!("bad frame header: {e}"))),
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if self.skipping > 0 {
            let n = self.skipping.min(src.len() as u64);
            src.advance(n as usize);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let Some((seq, rest)) = uvarint(src)? else { return Ok(None) };
        let Some((len, rest)) = uvarint(rest)? else { return Ok(None) };
        let header = src.len() - rest.len();
        if len > self.max_body as u64 {
            if !self.skip_oversize {
                return Err(invalid(format!("frame of {len} bytes, limit {}", self.max_body)));
            }
            src.advance(header);
            self.skipping = len;
            return Ok(Some(Frame::Oversize { seq, len }));
        }
        let len = len as usize;
        if rest.len() < len {
            src.reserve(header + len - src.len());
            return Ok(None);
        }
        src.advance(header);
        Ok(Some(Frame::Body { seq, body: src.split_to(len) }))
    }
}

impl Encoder for FrameCodec {
    type Item<'a> = (u64, &'a [u8]);
    type Error = io::Error;

    fn encode(&mut self, (seq, body): (u64, &[u8]), dst: &mut BytesMut) -> io::Result<()> {
        let mut seq_buf = unsigned_varint::encode::u64_buffer();
        let mut len_buf = unsigned_varint::encode::u64_buffer();
        let seq = unsigned_varint::encode::u64(seq, &mut seq_buf);
        let len = unsigned_varint::encode::u64(body.len() as u64, &mut len_buf);
        dst.reserve(seq.len() + len.len() + body.len());
        dst.put_slice(seq);
        dst.put_slice(len);
        dst.put_slice(body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn encoded(frames: &[(u64, &[u8])]) -> BytesMut {
        let mut wire = BytesMut::new();
        for frame in frames {
            FrameCodec::acks().encode(*frame, &mut wire).unwrap();
        }
        wire
    }

    /// Feeds `wire` to the decoder `chunk` bytes at a time, as a stream would.
    fn decode_all(codec: &mut FrameCodec, wire: &[u8], chunk: usize) -> io::Result<Vec<Frame>> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buf)? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let big = vec![7u8; 300];
        let wire = encoded(&[(1, b"hello"), (300, b""), (u64::MAX, &big)]);
        for chunk in [1, 2, 7, wire.len()] {
            let frames = decode_all(&mut FrameCodec::requests(1024), &wire, chunk).unwrap();
            assert_eq!(
                frames,
                vec![
                    Frame::Body { seq: 1, body: BytesMut::from(&b"hello"[..]) },
                    Frame::Body { seq: 300, body: BytesMut::new() },
                    Frame::Body { seq: u64::MAX, body: BytesMut::from(&big[..]) },
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn an_oversize_request_is_reported_then_skipped_and_the_stream_goes_on() {
        let big = vec![1u8; 100];
        let wire = encoded(&[(5, &big), (6, b"next")]);
        for chunk in [1, 3, wire.len()] {
            let frames = decode_all(&mut FrameCodec::requests(16), &wire, chunk).unwrap();
            assert_eq!(
                frames,
                vec![
                    Frame::Oversize { seq: 5, len: 100 },
                    Frame::Body { seq: 6, body: BytesMut::from(&b"next"[..]) }
                ],
                "chunks of {chunk}"
            );
        }
        // Announcing 1 GiB costs the receiver nothing: nothing is buffered.
        let mut len = unsigned_varint::encode::u64_buffer();
        let mut header = vec![9];
        header.extend_from_slice(unsigned_varint::encode::u64(1 << 30, &mut len));
        let mut buf = BytesMut::from(&header[..]);
        let mut codec = FrameCodec::requests(16);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Oversize { seq: 9, len: 1 << 30 }));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn bad_headers_and_oversize_acks_are_errors_not_panics() {
        let mut codec = FrameCodec::requests(16);
        assert!(codec.decode(&mut BytesMut::from(&[0xffu8; 32][..])).is_err());
        // A frame cut short waits for the rest.
        assert_eq!(codec.decode(&mut BytesMut::from(&[1u8, 10, 1, 2][..])).unwrap(), None);
        let wire = encoded(&[(1, &vec![0u8; MAX_ACK_BYTES + 1])]);
        assert!(FrameCodec::acks().decode(&mut BytesMut::from(&wire[..])).is_err());
    }

    #[test]
    fn acks_round_trip() {
        let ack = Ack { id: "abc".into(), rejected: Some("expired".into()) };
        assert_eq!(Ack::decode(&ack.encode()).unwrap(), ack);
        assert!(Ack::decode(b"\xff\x00").is_err());
    }
}
