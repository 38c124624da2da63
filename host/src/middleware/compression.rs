//! Compressing a response body once it is complete: gzip (flate2), brotli and zstd, at levels
//! chosen for dynamic responses rather than for static files compressed ahead of time.
//!
//! Runs on the tokio worker that sends the response, never on the interpreter's loop thread.
//! A body above [`OFFLOAD_ABOVE`] is compressed under `block_in_place`, which moves the
//! worker's other tasks to another thread meanwhile, so a large response does not hold up the
//! connections that share the worker. The compressed bytes are what the outbox charges
//! against `server.response_buffer` and `server.connection_response_buffer` (the body is
//! replaced before the service hands the response on), so the caps count what is actually
//! held for the client.
//!
//! A streamed body (a `StreamingResponse`, server-sent events) is sent as it is, never
//! compressed: compressing it would mean either buffering the stream, which defeats it, or a
//! compressor flushed after every chunk, which for the small chunks streams are made of (an
//! event of a few dozen bytes) adds per-chunk framing and CPU for little gain, and keeps a
//! compressor's window (up to megabytes for brotli and zstd) alive per open stream.

use std::io::Write;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use pyhost_core::middleware::add_vary;
use pyhost_core::middleware::encoding::{Coding, CompressionPolicy, Decision};
use pyhost_core::reply::Reply;

use crate::logging::{LogBudget, suppressed_note};

/// gzip level 6: zlib's default, most of level 9's ratio at a fraction of its time.
const GZIP_LEVEL: u32 = 6;
/// Brotli quality 4 with a 4 MiB window: about gzip 6's speed with a better ratio; the
/// qualities near 11 are for static files, far too slow per request.
const BROTLI_QUALITY: i32 = 4;
const BROTLI_WINDOW: i32 = 22;
/// zstd level 3: the library's default, faster than gzip 6 with a better ratio.
const ZSTD_LEVEL: i32 = 3;

/// Bodies larger than this are compressed with the worker handed off (`block_in_place`):
/// a few hundred microseconds of work at most stays inline.
const OFFLOAD_ABOVE: usize = 256 * 1024;

/// Compression failures logged per second (they would be a bug or memory exhaustion).
static FAILURE_LOGS: LogBudget = LogBudget::new(5);

/// Why a body could not be compressed; the response then goes out as it was.
#[derive(Debug, thiserror::Error)]
enum CompressError {
    #[error("{coding} encoder failed: {source}")]
    Encoder {
        coding: &'static str,
        source: std::io::Error,
    },
}

/// Applies `policy` to `reply` for a request that accepts `accepted` (`head`: a HEAD request).
pub(super) fn apply(
    policy: &CompressionPolicy,
    accepted: Option<Coding>,
    head: bool,
    reply: &mut Reply,
) {
    let coding = match policy.decide(
        reply.status,
        &reply.headers,
        reply.body.len(),
        accepted,
        head,
    ) {
        Decision::Identity { vary } => {
            if vary {
                add_vary(&mut reply.headers, "Accept-Encoding");
            }
            return;
        }
        Decision::Compress(coding) => coding,
    };
    add_vary(&mut reply.headers, "Accept-Encoding");
    let compressed = if reply.body.len() > OFFLOAD_ABOVE && may_block_in_place() {
        tokio::task::block_in_place(|| compress(coding, &reply.body))
    } else {
        compress(coding, &reply.body)
    };
    match compressed {
        // Incompressible data can come out larger: then the original is the better answer.
        Ok(bytes) if bytes.len() < reply.body.len() => {
            reply.body = Bytes::from(bytes);
            // A length a handler set is the identity body's; hyper writes the right one.
            reply.headers.retain(|(name, _)| *name != CONTENT_LENGTH);
            reply
                .headers
                .push((CONTENT_ENCODING, HeaderValue::from_static(coding.token())));
            weaken_etag(reply);
        }
        Ok(_) => {}
        Err(err) => {
            if let Some(held_back) = FAILURE_LOGS.admit() {
                tracing::warn!(
                    "sent a response uncompressed: {err}{}",
                    suppressed_note(held_back)
                );
            }
        }
    }
}

/// `block_in_place` panics on a current-thread runtime, which an embedding application may
/// serve from.
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn compress(coding: Coding, input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let failed = |source| CompressError::Encoder {
        coding: coding.token(),
        source,
    };
    match coding {
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(input.len() / 4),
                flate2::Compression::new(GZIP_LEVEL),
            );
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Coding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY,
                lgwin: BROTLI_WINDOW,
                size_hint: input.len(),
                ..Default::default()
            };
            let mut output = Vec::with_capacity(input.len() / 4);
            brotli::BrotliCompress(&mut &input[..], &mut output, &params).map_err(failed)?;
            Ok(output)
        }
        Coding::Zstd => zstd::bulk::compress(input, ZSTD_LEVEL).map_err(failed),
    }
}

/// A strong validator names one exact byte sequence, which the compressed body is not
/// (RFC 9110 §8.8.1): it is sent weak, as other servers do, so conditional requests still work.
fn weaken_etag(reply: &mut Reply) {
    for (name, value) in &mut reply.headers {
        if *name == ETAG && value.as_bytes().starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(value.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                *value = weak;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONTENT_TYPE, VARY};
    use http::{HeaderName, StatusCode};
    use std::io::Read;

    fn text_reply(body: &[u8]) -> Reply {
        Reply::with_body(
            StatusCode::OK,
            Bytes::copy_from_slice(body),
            "text/plain; charset=utf-8",
        )
    }

    fn header<'a>(reply: &'a Reply, name: &HeaderName) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap_or("?"))
    }

    fn policy() -> CompressionPolicy {
        CompressionPolicy::new(None, None, None).expect("the defaults are valid")
    }

    fn decode(coding: Coding, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => {
                flate2::read::GzDecoder::new(body)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Brotli => {
                brotli::Decompressor::new(body, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Coding::Zstd => out = zstd::decode_all(body).unwrap(),
        }
        out
    }

    #[test]
    fn each_coding_round_trips() {
        let original = "hello, compressible world. ".repeat(200);
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let mut reply = text_reply(original.as_bytes());
            reply
                .headers
                .push((ETAG, HeaderValue::from_static("\"v1\"")));
            reply
                .headers
                .push((CONTENT_LENGTH, HeaderValue::from(original.len())));
            apply(&policy(), Some(coding), false, &mut reply);
            assert_eq!(header(&reply, &CONTENT_ENCODING), Some(coding.token()));
            assert_eq!(header(&reply, &VARY), Some("Accept-Encoding"));
            assert_eq!(header(&reply, &ETAG), Some("W/\"v1\""));
            assert_eq!(header(&reply, &CONTENT_LENGTH), None);
            assert!(reply.body.len() < original.len() / 4, "{coding:?}");
            assert_eq!(decode(coding, &reply.body), original.as_bytes());
        }
    }

    #[test]
    fn incompressible_bodies_stay_as_they_are() {
        // A xorshift stream: no redundancy for any coder to find.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut reply = text_reply(&noise);
        apply(&policy(), Some(Coding::Gzip), false, &mut reply);
        assert_eq!(header(&reply, &CONTENT_ENCODING), None);
        assert_eq!(header(&reply, &VARY), Some("Accept-Encoding"));
        assert_eq!(&reply.body[..], &noise[..]);
    }

    #[test]
    fn head_and_identity_get_vary_only() {
        let body = "x".repeat(5000);
        let mut reply = text_reply(body.as_bytes());
        apply(&policy(), Some(Coding::Gzip), true, &mut reply);
        assert_eq!(header(&reply, &CONTENT_ENCODING), None);
        assert_eq!(header(&reply, &VARY), Some("Accept-Encoding"));
        let mut reply = text_reply(body.as_bytes());
        apply(&policy(), None, false, &mut reply);
        assert_eq!(header(&reply, &CONTENT_ENCODING), None);
        assert_eq!(
            header(&reply, &CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(reply.body.len(), 5000);
    }
}
