//! Block-wise transfer state of the server (RFC 7959): Block1 reassembly of
//! large request bodies and the cache of large response bodies served as
//! Block2 blocks.
//!
//! coap-lite ships a `BlockHandler`, but it is not used: it reads the wall
//! clock itself (its LRU cache calls `Instant::now()`), which breaks the
//! time-passed-in design and deterministic tests; it has no total size cap
//! (so no 4.13 with Size1), answers out-of-order blocks by growing the buffer
//! instead of with 4.08, and its block value type only decodes 2-byte
//! options. The state here is small and keyed the way RFC 7959 §2.3 says:
//! by peer and request URI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::message::BlockOpt;

/// Limits of block-wise transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockwiseConfig {
    /// Largest reassembled request or cached response body (default 64 KiB).
    /// Larger Block1 uploads get 4.13 with Size1.
    pub max_body_size: usize,
    /// Preferred block size, a power of two from 16 to 1024 (default 1024).
    pub block_size: usize,
    /// A transfer with no block for this long is forgotten (default 60 s).
    pub transfer_timeout: Duration,
    /// Most Block1 reassemblies at once (default 64), and per peer (4).
    pub max_uploads: usize,
    /// See `max_uploads`.
    pub max_uploads_per_peer: usize,
    /// Most bytes of response bodies cached for Block2 (default 4 MiB).
    pub max_cached_bytes: usize,
}

impl Default for BlockwiseConfig {
    fn default() -> Self {
        Self {
            max_body_size: 64 * 1024,
            block_size: 1024,
            transfer_timeout: Duration::from_secs(60),
            max_uploads: 64,
            max_uploads_per_peer: 4,
            max_cached_bytes: 4 << 20,
        }
    }
}

/// Outcome of feeding one Block1 block to the assembler.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Block1Outcome {
    /// More blocks expected: answer 2.31 Continue.
    Continue,
    /// The last block arrived: the whole body.
    Complete(Bytes),
    /// A block is missing or out of order: 4.08.
    Incomplete,
    /// The body would exceed the cap: 4.13 with Size1.
    TooLarge,
    /// A block with M=1 was not full-size: 4.00.
    BadBlock,
    /// Too many transfers in progress: 5.03.
    Busy,
}

#[derive(Debug)]
struct Upload {
    body: BytesMut,
    content_format: Option<u16>,
    last_activity: Instant,
}

/// One received Block1 block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block1Part<'a> {
    pub block: BlockOpt,
    pub content_format: Option<u16>,
    pub payload: &'a [u8],
}

/// Block1 reassembly, keyed by (peer, request URI).
#[derive(Debug, Default)]
pub(crate) struct Block1Assembler {
    uploads: HashMap<(SocketAddr, String), Upload>,
}

impl Block1Assembler {
    /// Feeds one block. `key` is the request URI (path and query).
    pub fn feed(
        &mut self,
        now: Instant,
        config: &BlockwiseConfig,
        peer: SocketAddr,
        key: &str,
        part: Block1Part<'_>,
    ) -> Block1Outcome {
        let Block1Part {
            block,
            content_format,
            payload,
        } = part;
        let offset = block.offset();
        let end = offset.saturating_add(payload.len());
        if end > config.max_body_size {
            self.uploads.remove(&(peer, key.to_owned()));
            return Block1Outcome::TooLarge;
        }
        if block.more && payload.len() != block.size() {
            self.uploads.remove(&(peer, key.to_owned()));
            return Block1Outcome::BadBlock;
        }
        let map_key = (peer, key.to_owned());
        if block.num == 0 {
            if !self.uploads.contains_key(&map_key) && !self.has_room(peer, config) {
                return Block1Outcome::Busy;
            }
            self.uploads.insert(
                map_key.clone(),
                Upload {
                    body: BytesMut::new(),
                    content_format,
                    last_activity: now,
                },
            );
        }
        let Some(upload) = self.uploads.get_mut(&map_key) else {
            return Block1Outcome::Incomplete;
        };
        if upload.content_format != content_format {
            self.uploads.remove(&map_key);
            return Block1Outcome::Incomplete;
        }
        let have = upload.body.len();
        if offset == have {
            upload.body.extend_from_slice(payload);
        } else if offset < have && end <= have && block.more {
            // A repeated earlier block (new message ID, so not caught by
            // deduplication): acknowledge it again, keep what we have.
        } else {
            self.uploads.remove(&map_key);
            return Block1Outcome::Incomplete;
        }
        upload.last_activity = now;
        if block.more {
            Block1Outcome::Continue
        } else {
            self.uploads
                .remove(&map_key)
                .map_or(Block1Outcome::Incomplete, |u| {
                    Block1Outcome::Complete(u.body.freeze())
                })
        }
    }

    fn has_room(&self, peer: SocketAddr, config: &BlockwiseConfig) -> bool {
        let of_peer = self.uploads.keys().filter(|(p, _)| *p == peer).count();
        self.uploads.len() < config.max_uploads && of_peer < config.max_uploads_per_peer
    }

    /// Forgets transfers idle for longer than the timeout.
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        self.uploads
            .retain(|_, u| now.saturating_duration_since(u.last_activity) < timeout);
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.uploads.len()
    }
}

/// A large body kept so that later Block2 requests can be served from it.
#[derive(Clone, Debug)]
pub(crate) struct CachedBody {
    pub code: coap_lite::MessageClass,
    pub content_format: Option<u16>,
    pub etag: Option<Vec<u8>>,
    pub max_age: Option<u32>,
    pub body: Bytes,
    last_activity: Instant,
}

/// Response bodies served block by block, keyed by (peer, request URI).
/// Bounded by total bytes; the least recently used body goes first.
#[derive(Debug, Default)]
pub(crate) struct Block2Cache {
    bodies: HashMap<(SocketAddr, String), CachedBody>,
    bytes: usize,
}

impl Block2Cache {
    /// Stores a body (replacing an older one for the same key).
    #[allow(clippy::too_many_arguments, reason = "plain data of one response")]
    pub fn store(
        &mut self,
        now: Instant,
        config: &BlockwiseConfig,
        peer: SocketAddr,
        key: String,
        code: coap_lite::MessageClass,
        content_format: Option<u16>,
        etag: Option<Vec<u8>>,
        max_age: Option<u32>,
        body: Bytes,
    ) {
        self.remove(peer, &key);
        if body.len() > config.max_cached_bytes {
            return;
        }
        while self.bytes + body.len() > config.max_cached_bytes {
            let Some(oldest) = self
                .bodies
                .iter()
                .min_by_key(|(_, b)| b.last_activity)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(oldest.0, &oldest.1);
        }
        self.bytes += body.len();
        self.bodies.insert(
            (peer, key),
            CachedBody {
                code,
                content_format,
                etag,
                max_age,
                body,
                last_activity: now,
            },
        );
    }

    /// The body cached for (peer, key), refreshing its timer.
    pub fn get(&mut self, now: Instant, peer: SocketAddr, key: &str) -> Option<CachedBody> {
        let body = self.bodies.get_mut(&(peer, key.to_owned()))?;
        body.last_activity = now;
        Some(body.clone())
    }

    /// Drops the body for (peer, key).
    pub fn remove(&mut self, peer: SocketAddr, key: &str) {
        if let Some(b) = self.bodies.remove(&(peer, key.to_owned())) {
            self.bytes = self.bytes.saturating_sub(b.body.len());
        }
    }

    /// Forgets bodies not asked for within the timeout.
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        let mut freed = 0;
        self.bodies.retain(|_, b| {
            let keep = now.saturating_duration_since(b.last_activity) < timeout;
            if !keep {
                freed += b.body.len();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

/// The slice of `body` for block `num` of size `16 << szx`, and whether more
/// blocks follow; `None` when the block starts past the end (4.02 per RFC
/// 7959 §2.4 — except block 0 of an empty body, which is valid).
pub(crate) fn slice_block(body: &Bytes, num: u32, szx: u8) -> Option<(Bytes, bool)> {
    let block = BlockOpt {
        num,
        more: false,
        szx,
    };
    let start = block.offset();
    if start > body.len() || (start == body.len() && num > 0) {
        return None;
    }
    let end = start.saturating_add(block.size()).min(body.len());
    Some((body.slice(start..end), end < body.len()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    fn part(block: BlockOpt, content_format: Option<u16>, payload: &[u8]) -> Block1Part<'_> {
        Block1Part {
            block,
            content_format,
            payload,
        }
    }

    #[test]
    fn reassembles_in_order_and_rejects_gaps() {
        let t0 = Instant::now();
        let cfg = BlockwiseConfig::default();
        let mut a = Block1Assembler::default();
        let blk = |num, more| BlockOpt { num, more, szx: 2 };
        let chunk = [7u8; 64];
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(0, true), Some(50), &chunk)),
            Block1Outcome::Continue
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(0, true), Some(50), &chunk)),
            Block1Outcome::Continue,
            "block 0 restarts"
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(1, true), Some(50), &chunk)),
            Block1Outcome::Continue
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(1, true), Some(50), &chunk)),
            Block1Outcome::Continue,
            "repeat is acknowledged"
        );
        match a.feed(
            t0,
            &cfg,
            peer(),
            "p",
            part(blk(2, false), Some(50), &chunk[..10]),
        ) {
            Block1Outcome::Complete(body) => assert_eq!(body.len(), 138),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(0, true), Some(50), &chunk)),
            Block1Outcome::Continue
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "p", part(blk(2, true), Some(50), &chunk)),
            Block1Outcome::Incomplete
        );
        assert_eq!(a.len(), 0);
        assert_eq!(
            a.feed(t0, &cfg, peer(), "q", part(blk(3, false), Some(50), &chunk)),
            Block1Outcome::Incomplete
        );
        assert_eq!(
            a.feed(
                t0,
                &cfg,
                peer(),
                "q",
                part(blk(0, true), Some(50), &chunk[..3])
            ),
            Block1Outcome::BadBlock
        );
    }

    #[test]
    fn cap_and_busy_limits() {
        let t0 = Instant::now();
        let cfg = BlockwiseConfig {
            max_body_size: 100,
            max_uploads_per_peer: 1,
            ..Default::default()
        };
        let mut a = Block1Assembler::default();
        let blk = |num, more| BlockOpt { num, more, szx: 2 };
        let chunk = [0u8; 64];
        assert_eq!(
            a.feed(t0, &cfg, peer(), "a", part(blk(0, true), None, &chunk)),
            Block1Outcome::Continue
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "b", part(blk(0, true), None, &chunk)),
            Block1Outcome::Busy
        );
        assert_eq!(
            a.feed(t0, &cfg, peer(), "a", part(blk(1, true), None, &chunk)),
            Block1Outcome::TooLarge
        );
        a.expire(t0 + Duration::from_secs(61), cfg.transfer_timeout);
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn slices_blocks() {
        let body = Bytes::from(vec![1u8; 2500]);
        assert_eq!(
            slice_block(&body, 0, 6).map(|(b, m)| (b.len(), m)),
            Some((1024, true))
        );
        assert_eq!(
            slice_block(&body, 2, 6).map(|(b, m)| (b.len(), m)),
            Some((452, false))
        );
        assert_eq!(slice_block(&body, 3, 6), None);
        assert_eq!(
            slice_block(&Bytes::new(), 0, 6).map(|(b, m)| (b.len(), m)),
            Some((0, false))
        );
    }
}
