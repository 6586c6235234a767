//! Framings: cutting a byte stream (or datagrams) into frames, and wrapping payloads into frames.
//!
//! A [`Framer`] is the compiled framing plus checksum plus size cap; it encodes payloads and hands
//! out a [`FrameDecoder`] per connection (or serial line, or UDP listener). The decoder is a plain
//! struct with no I/O: [`FrameDecoder::push`] the bytes read, then call
//! [`FrameDecoder::next_frame`] until it returns `Ok(None)` ("need more bytes").
//!
//! # Errors and resynchronisation
//! An error is about one frame; calling `next_frame` again carries on with the bytes after it, and
//! every error consumes input, so a loop over `next_frame` always ends. What is skipped:
//! - **lines**: an over-long line is dropped up to its `\n`.
//! - **delimited**: an oversize frame or a bad escape is dropped up to the next end byte (or start
//!   byte, when there is a distinct one).
//! - **length-prefixed**: a length that is too large or too small means the stream position is lost;
//!   the decoder drops everything buffered and starts afresh with the next bytes pushed. On TCP the
//!   gateway should close the connection; on a serial line, decoding resumes at whatever comes next.
//! - **fixed**, **datagram**: a frame with a bad checksum is dropped; nothing else can go wrong.
//!
//! Memory: the decoder holds what was pushed and not yet framed, and never more than the size cap
//! for a frame being assembled, whatever the input says.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::checksum::Checksum;
use super::config::{
    ByteOrder, ChecksumConfig, ChecksumEncoding, ConfigProblem, FrameConfigError, FramingConfig,
    LineEnding, MAX_FRAME_LIMIT,
};
use super::errors::FrameError;

/// One frame: the payload for the layout, with framing bytes and checksum removed (and verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The bytes the layout reads.
    pub payload: Bytes,
}

/// A compiled framing, checksum and size cap. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Framer {
    kind: Kind,
    checksum: Option<Checksum>,
    max_frame: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    Datagram,
    Lines { crlf: bool },
    LengthPrefixed(LengthPrefix),
    Delimited(Delimiters),
    Fixed(usize),
}

#[derive(Debug, Clone)]
struct LengthPrefix {
    width: usize,
    order: ByteOrder,
    includes_header: bool,
    offset: usize,
    adjust: i64,
}

impl LengthPrefix {
    fn header(&self) -> usize {
        self.offset + self.width
    }
}

#[derive(Debug, Clone)]
struct Delimiters {
    /// A start byte distinct from `end`; with a shared flag byte this is `None` and `hunt` is set.
    start: Option<u8>,
    /// Skip bytes until the first start (or flag) byte.
    hunt: bool,
    end: u8,
    escape: Option<Escape>,
}

#[derive(Debug, Clone)]
struct Escape {
    byte: u8,
    start_sub: Option<u8>,
    end_sub: u8,
    escape_sub: u8,
}

impl Escape {
    fn unescape(&self, sub: u8, start: Option<u8>, end: u8) -> Option<u8> {
        if sub == self.end_sub {
            Some(end)
        } else if sub == self.escape_sub {
            Some(self.byte)
        } else if self.start_sub == Some(sub) {
            start
        } else {
            None
        }
    }
}

fn invalid(key: &str, problem: ConfigProblem) -> FrameConfigError {
    FrameConfigError::invalid(key, problem)
}

fn out_of_range(key: &str, value: usize, min: usize, max: usize) -> FrameConfigError {
    let widen = |n: usize| i128::try_from(n).unwrap_or(i128::MAX);
    invalid(
        key,
        ConfigProblem::OutOfRange {
            value: widen(value),
            min: widen(min),
            max: widen(max),
        },
    )
}

impl Framer {
    /// Compiles a framing with an optional checksum and a cap on the frame size, checking that they
    /// fit together. Errors name keys of `[bindings.frame]` (`framing.end`, `checksum.encoding`).
    pub fn new(
        framing: &FramingConfig,
        checksum: Option<&ChecksumConfig>,
        max_frame: usize,
    ) -> Result<Self, FrameConfigError> {
        if max_frame == 0 || max_frame > MAX_FRAME_LIMIT {
            return Err(out_of_range("max_frame", max_frame, 1, MAX_FRAME_LIMIT));
        }
        if let Some(config) = checksum {
            if config.encoding == ChecksumEncoding::Binary && config.separator.is_some() {
                return Err(invalid(
                    "checksum.separator",
                    ConfigProblem::NotApplicable("with encoding = \"binary\""),
                ));
            }
            if config.encoding == ChecksumEncoding::Hex && config.order.is_some() {
                return Err(invalid(
                    "checksum.order",
                    ConfigProblem::NotApplicable(
                        "with encoding = \"hex\" (written most significant first)",
                    ),
                ));
            }
        }
        let checksum = checksum.map(Checksum::new);
        let trailer = checksum.as_ref().map_or(0, Checksum::trailer_len);
        let skip = checksum.as_ref().map_or(0, Checksum::skip);
        if trailer + skip > max_frame {
            return Err(invalid(
                "checksum",
                ConfigProblem::TooShortForChecksum {
                    length: max_frame,
                    needed: trailer + skip,
                },
            ));
        }
        let text_checksum = checksum.as_ref().is_none_or(Checksum::is_text);
        let kind = match *framing {
            FramingConfig::Datagram {} => Kind::Datagram,
            FramingConfig::Lines { ending } => {
                if !text_checksum {
                    return Err(invalid(
                        "checksum.encoding",
                        ConfigProblem::ChecksumNeedsHex,
                    ));
                }
                Kind::Lines {
                    crlf: ending == LineEnding::Crlf,
                }
            }
            FramingConfig::LengthPrefixed {
                width,
                order,
                includes_header,
                offset,
                adjust,
            } => {
                let prefix = LengthPrefix {
                    width: width.bytes(),
                    order,
                    includes_header,
                    offset,
                    adjust,
                };
                let least = prefix.header() + trailer;
                if least > max_frame {
                    return Err(out_of_range(
                        "framing.offset",
                        offset,
                        0,
                        max_frame.saturating_sub(prefix.width + trailer),
                    ));
                }
                Kind::LengthPrefixed(prefix)
            }
            FramingConfig::Delimited {
                start,
                end,
                escape,
                escaped_start,
                escaped_end,
                escaped_escape,
            } => Kind::Delimited(delimiters(
                start,
                end,
                escape,
                [escaped_start, escaped_end, escaped_escape],
                text_checksum,
            )?),
            FramingConfig::Fixed { length } => {
                if length == 0 || length > max_frame {
                    return Err(out_of_range("framing.length", length, 1, max_frame));
                }
                if length < trailer + skip {
                    return Err(invalid(
                        "framing.length",
                        ConfigProblem::TooShortForChecksum {
                            length,
                            needed: trailer + skip,
                        },
                    ));
                }
                Kind::Fixed(length)
            }
        };
        Ok(Self {
            kind,
            checksum,
            max_frame,
        })
    }

    /// The cap on one frame, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Whether this framing needs datagram boundaries (cannot run on a stream).
    pub fn needs_datagrams(&self) -> bool {
        matches!(self.kind, Kind::Datagram)
    }

    /// Bytes of a payload's frame that are not payload (header and checksum; not delimiters).
    fn overhead(&self) -> usize {
        let trailer = self.checksum.as_ref().map_or(0, Checksum::trailer_len);
        match &self.kind {
            Kind::LengthPrefixed(prefix) => prefix.width + trailer,
            _ => trailer,
        }
    }

    /// The largest payload [`Framer::encode`] accepts.
    pub fn max_payload(&self) -> usize {
        match self.kind {
            Kind::Fixed(length) => length.saturating_sub(self.overhead()),
            _ => self.max_frame.saturating_sub(self.overhead()),
        }
    }

    /// A decoder for one byte stream (or one UDP listener) using this framing.
    pub fn decoder(&self) -> FrameDecoder {
        FrameDecoder {
            framer: self.clone(),
            buf: BytesMut::new(),
            state: State::initial(&self.kind),
        }
    }

    /// Wraps a payload into one frame ready to send: header, checksum, escapes, delimiters.
    pub fn encode(&self, payload: &[u8]) -> Result<Bytes, FrameError> {
        let frame_len = payload.len().saturating_add(self.overhead());
        if frame_len > self.max_frame {
            return Err(FrameError::Oversize {
                len: u64::try_from(frame_len).unwrap_or(u64::MAX),
                max: self.max_frame,
            });
        }
        match &self.kind {
            Kind::Datagram => Ok(Bytes::from(self.with_checksum(payload.to_vec())?)),
            Kind::Fixed(length) => {
                if frame_len != *length {
                    return Err(FrameError::WrongLength {
                        len: payload.len(),
                        expected: length.saturating_sub(self.overhead()),
                    });
                }
                Ok(Bytes::from(self.with_checksum(payload.to_vec())?))
            }
            Kind::Lines { crlf } => {
                if let Some(&byte) = payload.iter().find(|&&b| b == b'\n') {
                    return Err(FrameError::ForbiddenByte { byte });
                }
                if payload.last() == Some(&b'\r') {
                    return Err(FrameError::ForbiddenByte { byte: b'\r' });
                }
                let mut frame = self.with_checksum(payload.to_vec())?;
                if frame.is_empty() {
                    return Err(FrameError::EmptyFrame);
                }
                if *crlf {
                    frame.push(b'\r');
                }
                frame.push(b'\n');
                Ok(Bytes::from(frame))
            }
            Kind::LengthPrefixed(prefix) => self.encode_length_prefixed(prefix, payload, frame_len),
            Kind::Delimited(delimiters) => {
                let content = self.with_checksum(payload.to_vec())?;
                if content.is_empty() {
                    return Err(FrameError::EmptyFrame);
                }
                delimiters.wrap(&content).map(Bytes::from)
            }
        }
    }

    fn with_checksum(&self, mut content: Vec<u8>) -> Result<Vec<u8>, FrameError> {
        if let Some(checksum) = &self.checksum {
            checksum.append(&mut content)?;
        }
        Ok(content)
    }

    fn encode_length_prefixed(
        &self,
        prefix: &LengthPrefix,
        payload: &[u8],
        frame_len: usize,
    ) -> Result<Bytes, FrameError> {
        let (before, after) =
            payload
                .split_at_checked(prefix.offset)
                .ok_or(FrameError::WrongLength {
                    len: payload.len(),
                    expected: prefix.offset,
                })?;
        let counted = if prefix.includes_header {
            frame_len
        } else {
            frame_len.saturating_sub(prefix.header())
        };
        let overflow = FrameError::LengthOverflow {
            len: frame_len,
            width: prefix.width,
        };
        let value =
            i128::try_from(counted).map_err(|_| overflow.clone())? - i128::from(prefix.adjust);
        let value = u64::try_from(value).map_err(|_| overflow.clone())?;
        let bytes = value.to_be_bytes();
        let split = bytes.len() - prefix.width;
        let (high, field) = bytes.split_at(split);
        if high.iter().any(|&b| b != 0) {
            return Err(overflow);
        }
        let mut frame = Vec::with_capacity(frame_len);
        frame.extend_from_slice(before);
        match prefix.order {
            ByteOrder::Big => frame.extend_from_slice(field),
            ByteOrder::Little => frame.extend(field.iter().rev()),
        }
        frame.extend_from_slice(after);
        Ok(Bytes::from(self.with_checksum(frame)?))
    }

    /// Verifies and strips the checksum of a frame's content.
    fn finish(&self, content: Bytes) -> Result<Frame, FrameError> {
        match &self.checksum {
            Some(checksum) => {
                let len = checksum.verify(&content)?;
                Ok(Frame {
                    payload: content.slice(..len),
                })
            }
            None => Ok(Frame { payload: content }),
        }
    }
}

fn delimiters(
    start: Option<u8>,
    end: u8,
    escape: Option<u8>,
    [escaped_start, escaped_end, escaped_escape]: [Option<u8>; 3],
    text_checksum: bool,
) -> Result<Delimiters, FrameConfigError> {
    let distinct_start = start.filter(|&s| s != end);
    let Some(escape) = escape else {
        for (key, value) in [
            ("framing.escaped_start", escaped_start),
            ("framing.escaped_end", escaped_end),
            ("framing.escaped_escape", escaped_escape),
        ] {
            if value.is_some() {
                return Err(invalid(
                    key,
                    ConfigProblem::NotApplicable("without `escape`"),
                ));
            }
        }
        if !text_checksum {
            return Err(invalid(
                "checksum.encoding",
                ConfigProblem::ChecksumNeedsHex,
            ));
        }
        return Ok(Delimiters {
            start: distinct_start,
            hunt: start.is_some(),
            end,
            escape: None,
        });
    };
    if escape == end {
        return Err(invalid(
            "framing.escape",
            ConfigProblem::ByteClash {
                byte: escape,
                other: "end",
            },
        ));
    }
    if start == Some(escape) {
        return Err(invalid(
            "framing.escape",
            ConfigProblem::ByteClash {
                byte: escape,
                other: "start",
            },
        ));
    }
    let required = |key: &str, value: Option<u8>| {
        value.ok_or_else(|| invalid(key, ConfigProblem::Required { because: "escape" }))
    };
    let end_sub = required("framing.escaped_end", escaped_end)?;
    let escape_sub = required("framing.escaped_escape", escaped_escape)?;
    let start_sub = match distinct_start {
        Some(_) => Some(required("framing.escaped_start", escaped_start)?),
        None if escaped_start.is_some() => {
            return Err(invalid(
                "framing.escaped_start",
                ConfigProblem::NotApplicable("without a `start` byte distinct from `end`"),
            ));
        }
        None => None,
    };
    let mut taken: Vec<(u8, &'static str)> = vec![(end, "end"), (escape, "escape")];
    if let Some(start) = distinct_start {
        taken.push((start, "start"));
    }
    for (key, sub) in [
        ("framing.escaped_end", Some(end_sub)),
        ("framing.escaped_escape", Some(escape_sub)),
        ("framing.escaped_start", start_sub),
    ] {
        let Some(sub) = sub else { continue };
        if let Some(&(_, other)) = taken.iter().find(|(byte, _)| *byte == sub) {
            return Err(invalid(key, ConfigProblem::ByteClash { byte: sub, other }));
        }
        taken.push((sub, key.trim_start_matches("framing.")));
    }
    Ok(Delimiters {
        start: distinct_start,
        hunt: start.is_some(),
        end,
        escape: Some(Escape {
            byte: escape,
            start_sub,
            end_sub,
            escape_sub,
        }),
    })
}

impl Delimiters {
    fn wrap(&self, content: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut frame = Vec::with_capacity(content.len() + content.len() / 8 + 2);
        if self.hunt {
            frame.push(self.start.unwrap_or(self.end));
        }
        for &byte in content {
            let sub = if byte == self.end {
                Some(self.escape.as_ref().map(|e| e.end_sub))
            } else if Some(byte) == self.start {
                Some(self.escape.as_ref().and_then(|e| e.start_sub))
            } else if self.escape.as_ref().is_some_and(|e| e.byte == byte) {
                Some(self.escape.as_ref().map(|e| e.escape_sub))
            } else {
                None
            };
            match sub {
                None => frame.push(byte),
                Some(Some(sub)) => {
                    if let Some(escape) = &self.escape {
                        frame.push(escape.byte);
                    }
                    frame.push(sub);
                }
                Some(None) => return Err(FrameError::ForbiddenByte { byte }),
            }
        }
        frame.push(self.end);
        Ok(frame)
    }
}

/// Cuts pushed bytes into frames; one per connection, serial line or UDP listener.
///
/// Feed it with [`push`](Self::push), drain it with [`next_frame`](Self::next_frame) until
/// `Ok(None)`. With the datagram framing each push is one frame. For UDP with another framing, push
/// one datagram, drain, then [`reset`](Self::reset) so that a partial frame does not run on into the
/// next datagram. Owned by the task reading the connection; not shared.
#[derive(Debug)]
pub struct FrameDecoder {
    framer: Framer,
    buf: BytesMut,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Pushed datagrams, or the size of an oversize one that was not kept.
    Datagram(VecDeque<Result<Bytes, usize>>),
    Lines {
        /// Bytes of `buf` already known to hold no `\n`.
        scanned: usize,
        /// Dropping an over-long line up to its end.
        discarding: bool,
    },
    LengthPrefixed,
    Fixed,
    Delimited {
        phase: Phase,
        current: BytesMut,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Skipping bytes until a start byte.
    Hunting,
    InFrame,
    /// The previous byte was the escape byte.
    Escaped,
    /// Dropping a bad frame up to its end.
    Discarding,
}

impl State {
    fn initial(kind: &Kind) -> Self {
        match kind {
            Kind::Datagram => Self::Datagram(VecDeque::new()),
            Kind::Lines { .. } => Self::Lines {
                scanned: 0,
                discarding: false,
            },
            Kind::LengthPrefixed(_) => Self::LengthPrefixed,
            Kind::Fixed(_) => Self::Fixed,
            Kind::Delimited(delimiters) => Self::Delimited {
                phase: if delimiters.hunt {
                    Phase::Hunting
                } else {
                    Phase::InFrame
                },
                current: BytesMut::new(),
            },
        }
    }
}

impl FrameDecoder {
    /// Adds bytes read from the device (with the datagram framing: one whole datagram). The decoder
    /// keeps what is pushed until it is framed, so drain it with `next_frame` after each push.
    pub fn push(&mut self, data: &[u8]) {
        if let State::Datagram(queue) = &mut self.state {
            if data.len() > self.framer.max_frame {
                queue.push_back(Err(data.len()));
            } else {
                queue.push_back(Ok(Bytes::copy_from_slice(data)));
            }
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Drops buffered bytes and any partial frame, as after a reconnect.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.state = State::initial(&self.framer.kind);
    }

    /// Bytes pushed and not yet framed or dropped.
    pub fn buffered(&self) -> usize {
        let pending = match &self.state {
            State::Datagram(queue) => queue.iter().map(|d| d.as_ref().map_or(0, Bytes::len)).sum(),
            State::Delimited { current, .. } => current.len(),
            _ => 0,
        };
        self.buf.len() + pending
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error about one frame
    /// (see the module doc for what is skipped). Call again after an error to carry on.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Self { framer, buf, state } = self;
        let max = framer.max_frame;
        match (&framer.kind, state) {
            (Kind::Datagram, State::Datagram(queue)) => match queue.pop_front() {
                None => Ok(None),
                Some(Ok(datagram)) => framer.finish(datagram).map(Some),
                Some(Err(len)) => Err(FrameError::Oversize {
                    len: u64::try_from(len).unwrap_or(u64::MAX),
                    max,
                }),
            },
            (
                Kind::Lines { .. },
                State::Lines {
                    scanned,
                    discarding,
                },
            ) => next_line(framer, buf, scanned, discarding),
            (Kind::LengthPrefixed(prefix), State::LengthPrefixed) => {
                next_length_prefixed(framer, prefix, buf)
            }
            (Kind::Fixed(length), State::Fixed) => {
                if buf.len() < *length {
                    return Ok(None);
                }
                let frame = buf.split_to(*length).freeze();
                framer.finish(frame).map(Some)
            }
            (Kind::Delimited(delimiters), State::Delimited { phase, current }) => {
                next_delimited(framer, delimiters, buf, phase, current)
            }
            // `state` is always built from `kind`; a mismatch cannot happen, and yields nothing.
            _ => Ok(None),
        }
    }
}

fn next_line(
    framer: &Framer,
    buf: &mut BytesMut,
    scanned: &mut usize,
    discarding: &mut bool,
) -> Result<Option<Frame>, FrameError> {
    let max = framer.max_frame;
    loop {
        let unscanned = buf.get(*scanned..).unwrap_or_default();
        let Some(at) = unscanned.iter().position(|&b| b == b'\n') else {
            *scanned = buf.len();
            if *discarding {
                buf.clear();
                *scanned = 0;
            } else if buf.len() > max + 1 {
                // Room for a `\r` before the `\n` is allowed; past that the line is too long.
                let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
                buf.clear();
                *scanned = 0;
                *discarding = true;
                return Err(FrameError::Oversize { len, max });
            }
            return Ok(None);
        };
        let end = *scanned + at;
        let mut line = buf.split_to(end + 1).freeze();
        *scanned = 0;
        if std::mem::take(discarding) {
            continue;
        }
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        if line.is_empty() {
            continue;
        }
        if line.len() > max {
            return Err(FrameError::Oversize {
                len: u64::try_from(line.len()).unwrap_or(u64::MAX),
                max,
            });
        }
        return framer.finish(line).map(Some);
    }
}

fn next_length_prefixed(
    framer: &Framer,
    prefix: &LengthPrefix,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, FrameError> {
    let header = prefix.header();
    let Some(field) = buf.get(prefix.offset..header) else {
        return Ok(None);
    };
    let fold = |acc: u64, &byte: &u8| (acc << 8) | u64::from(byte);
    let value = match prefix.order {
        ByteOrder::Big => field.iter().fold(0, fold),
        ByteOrder::Little => field.iter().rev().fold(0, fold),
    };
    let counted = i128::from(value) + i128::from(prefix.adjust);
    let total = if prefix.includes_header {
        counted
    } else {
        counted + i128::try_from(header).unwrap_or(i128::MAX)
    };
    let trailer = framer.checksum.as_ref().map_or(0, Checksum::trailer_len);
    let min = header + trailer;
    let Ok(total) = usize::try_from(total) else {
        buf.clear();
        return Err(FrameError::BadLength { total, min });
    };
    if total < min {
        buf.clear();
        return Err(FrameError::BadLength {
            total: i128::try_from(total).unwrap_or(i128::MAX),
            min,
        });
    }
    if total > framer.max_frame {
        buf.clear();
        return Err(FrameError::Oversize {
            len: u64::try_from(total).unwrap_or(u64::MAX),
            max: framer.max_frame,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let content_len = match &framer.checksum {
        Some(checksum) => checksum.verify(&frame)?,
        None => frame.len(),
    };
    let body = frame.slice(header.min(content_len)..content_len);
    let payload = if prefix.offset == 0 {
        body
    } else {
        let mut joined = BytesMut::with_capacity(prefix.offset + body.len());
        joined.extend_from_slice(frame.get(..prefix.offset).unwrap_or_default());
        joined.extend_from_slice(&body);
        joined.freeze()
    };
    Ok(Some(Frame { payload }))
}

fn next_delimited(
    framer: &Framer,
    delimiters: &Delimiters,
    buf: &mut BytesMut,
    phase: &mut Phase,
    current: &mut BytesMut,
) -> Result<Option<Frame>, FrameError> {
    let max = framer.max_frame;
    let after_end = if delimiters.start.is_some() {
        Phase::Hunting
    } else {
        Phase::InFrame
    };
    let is_start = |byte: u8| delimiters.start == Some(byte);
    let mut consumed = 0;
    let outcome = loop {
        let Some(&byte) = buf.get(consumed) else {
            break Ok(None);
        };
        consumed += 1;
        match *phase {
            Phase::Hunting => {
                if is_start(byte) || (delimiters.start.is_none() && byte == delimiters.end) {
                    current.clear();
                    *phase = Phase::InFrame;
                }
            }
            Phase::Discarding => {
                if byte == delimiters.end {
                    *phase = after_end;
                } else if is_start(byte) {
                    *phase = Phase::InFrame;
                }
            }
            Phase::Escaped => {
                let unescaped = delimiters
                    .escape
                    .as_ref()
                    .and_then(|escape| escape.unescape(byte, delimiters.start, delimiters.end));
                if let Some(unescaped) = unescaped {
                    if current.len() >= max {
                        current.clear();
                        *phase = Phase::Discarding;
                        break Err(oversize(max));
                    }
                    current.extend_from_slice(&[unescaped]);
                    *phase = Phase::InFrame;
                } else {
                    current.clear();
                    *phase = if byte == delimiters.end {
                        after_end
                    } else if is_start(byte) {
                        Phase::InFrame
                    } else {
                        Phase::Discarding
                    };
                    break Err(FrameError::InvalidEscape { byte });
                }
            }
            Phase::InFrame => {
                if byte == delimiters.end {
                    *phase = after_end;
                    if current.is_empty() {
                        continue;
                    }
                    let content = current.split().freeze();
                    break framer.finish(content).map(Some);
                } else if is_start(byte) {
                    // A start inside a frame: the previous frame lost its end; begin anew.
                    current.clear();
                } else if delimiters.escape.as_ref().is_some_and(|e| e.byte == byte) {
                    *phase = Phase::Escaped;
                } else if current.len() >= max {
                    current.clear();
                    *phase = Phase::Discarding;
                    break Err(oversize(max));
                } else {
                    current.extend_from_slice(&[byte]);
                }
            }
        }
    };
    buf.advance(consumed);
    outcome
}

fn oversize(max: usize) -> FrameError {
    FrameError::Oversize {
        len: u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1),
        max,
    }
}
