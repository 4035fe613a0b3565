//! The Unix socket's HTTP/2 `:authority` repair: gRPC clients send a socket path where h2
//! expects a host, so the first header block of each connection is inspected and, if its
//! `:authority` is not one h2 accepts, every header block of that connection is re-encoded
//! with `:authority: localhost` before tonic's h2 server reads it.
//!
//! Why (docs/decisions.md, "The Unix socket's :authority"): grpc-core 1.57 and later
//! (Python grpcio, C++, Ruby, PHP) send the percent-encoded socket path
//! (`tmp%2Fkd%2Fkeyorch.sock`) and grpc-java sends the raw path; h2 parses `:authority` as
//! an RFC 3986 authority, rejects both and resets the stream with PROTOCOL_ERROR, so those
//! clients could not make a single call. On a Unix socket the authority names nothing
//! (the peer is identified by SO_PEERCRED), so replacing it loses nothing.
//!
//! How: only the client → server direction is read. Frames are passed through unchanged
//! except HEADERS and CONTINUATION, whose header block is HPACK-decoded with the client's
//! own dynamic table. If the connection's first block carries an authority h2 takes (or
//! none, as keyorch's own tonic client), its bytes go on untouched and the connection is a
//! plain byte copy from then on. Otherwise that block and every later one is re-encoded as
//! literals without indexing, so h2's dynamic table stays empty and never has to agree
//! with the client's. Anything malformed is left for h2 to judge while nothing has been
//! rewritten; once the connection is rewritten, it is closed instead.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What a client's authority is replaced with (what grpc-go and grpc-js send on a socket).
pub const UNIX_AUTHORITY: &[u8] = b"localhost";

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame header.
const FRAME_HEADER: usize = 9;
/// Largest frame h2 accepts from a client: SETTINGS_MAX_FRAME_SIZE, which keyorchd leaves
/// at the protocol's initial 16,384.
const MAX_FRAME: usize = 16_384;
/// HPACK dynamic table size the client may use: h2's SETTINGS_HEADER_TABLE_SIZE, the
/// protocol's initial 4,096, which keyorchd does not change.
const MAX_TABLE: usize = 4_096;
/// Largest header block (all HEADERS and CONTINUATION payloads) and largest decoded header
/// list taken; h2 itself refuses lists over its 16 KiB SETTINGS_MAX_HEADER_LIST_SIZE.
const MAX_BLOCK: usize = 64 * 1024;
/// Bytes read from the socket at a time while frames are inspected.
const READ_CHUNK: usize = 16 * 1024;

const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Whether h2 takes this `:authority` (it parses it as `http::uri::Authority`).
fn acceptable(authority: &[u8]) -> bool {
    http::uri::Authority::try_from(authority).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the 24-byte client preface.
    Preface,
    /// Frames are read until the first header block decides the connection's mode.
    Inspect,
    /// Every header block is decoded and re-encoded.
    Rewrite,
    /// Bytes are copied unchanged.
    PassThrough,
}

/// A header block being assembled from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The original frames, byte for byte (only while inspecting).
    raw: Vec<u8>,
}

/// The client → server byte transformer, free of I/O so that it can be tested alone.
pub(crate) struct Rewriter {
    mode: Mode,
    input: Vec<u8>,
    output: Vec<u8>,
    out_pos: usize,
    /// Payload bytes of a passed-through frame still to copy.
    skip: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

/// Why a rewritten connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    #[error("HTTP/2 frame of {0} bytes exceeds the maximum frame size")]
    FrameTooLarge(usize),
    #[error("HTTP/2 header block exceeds {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("HTTP/2 frame interleaved with a header block (expected CONTINUATION)")]
    ExpectedContinuation,
    #[error("HTTP/2 CONTINUATION without a header block")]
    StrayContinuation,
    #[error("HTTP/2 HEADERS frame with invalid padding or priority")]
    BadHeadersFrame,
    #[error("HPACK: {0}")]
    Hpack(String),
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    pub(crate) fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE);
        Rewriter {
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            skip: 0,
            block: None,
            decoder,
        }
    }

    /// Whether every later byte is copied unchanged and nothing is left buffered, so the
    /// caller may drop the rewriter.
    fn done(&self) -> bool {
        self.mode == Mode::PassThrough && self.input.is_empty() && self.pending().is_empty()
    }

    fn pending(&self) -> &[u8] {
        &self.output[self.out_pos..]
    }

    /// Takes up to `max` bytes of output.
    pub(crate) fn take(&mut self, max: usize) -> &[u8] {
        let start = self.out_pos;
        let n = max.min(self.output.len() - start);
        self.out_pos += n;
        &self.output[start..start + n]
    }

    fn compact_output(&mut self) {
        if self.out_pos == self.output.len() {
            self.output.clear();
            self.out_pos = 0;
        }
    }

    /// Feeds bytes read from the client; the result is then available from `take`.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), RewriteError> {
        self.compact_output();
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = self.process(&mut pos);
        self.input.drain(..pos);
        result
    }

    /// At end of input: whatever is buffered goes on as it came (h2 reports the truncation).
    pub(crate) fn finish(&mut self) {
        self.compact_output();
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        let rest = std::mem::take(&mut self.input);
        self.output.extend_from_slice(&rest);
        self.mode = Mode::PassThrough;
    }

    /// Gives a malformed connection to h2 unchanged while nothing was rewritten; closes it
    /// otherwise.
    fn give_up(&mut self, pos: &mut usize, why: RewriteError) -> Result<(), RewriteError> {
        if self.mode == Mode::Rewrite {
            return Err(why);
        }
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.output.extend_from_slice(&self.input[*pos..]);
        *pos = self.input.len();
        self.mode = Mode::PassThrough;
        Ok(())
    }

    fn process(&mut self, pos: &mut usize) -> Result<(), RewriteError> {
        loop {
            let avail = self.input.len() - *pos;
            match self.mode {
                Mode::PassThrough => {
                    self.output.extend_from_slice(&self.input[*pos..]);
                    *pos = self.input.len();
                    return Ok(());
                }
                Mode::Preface => {
                    let n = avail.min(PREFACE.len());
                    if self.input[*pos..*pos + n] != PREFACE[..n] {
                        // Not HTTP/2 with prior knowledge: hyper answers it.
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.output.extend_from_slice(PREFACE);
                    *pos += PREFACE.len();
                    self.mode = Mode::Inspect;
                    continue;
                }
                Mode::Inspect | Mode::Rewrite => {}
            }
            if self.skip > 0 {
                let n = self.skip.min(avail);
                self.output.extend_from_slice(&self.input[*pos..*pos + n]);
                *pos += n;
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(());
                }
                continue;
            }
            if avail < FRAME_HEADER {
                return Ok(());
            }
            let h = &self.input[*pos..*pos + FRAME_HEADER];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let in_block = self.block.is_some();
            if in_block && (kind != TYPE_CONTINUATION || Some(stream_id) != self.block_stream()) {
                return self.give_up(pos, RewriteError::ExpectedContinuation);
            }
            if kind != TYPE_HEADERS && kind != TYPE_CONTINUATION {
                self.output
                    .extend_from_slice(&self.input[*pos..*pos + FRAME_HEADER]);
                *pos += FRAME_HEADER;
                self.skip = len;
                continue;
            }
            if kind == TYPE_CONTINUATION && !in_block {
                return self.give_up(pos, RewriteError::StrayContinuation);
            }
            if len > MAX_FRAME {
                return self.give_up(pos, RewriteError::FrameTooLarge(len));
            }
            if avail < FRAME_HEADER + len {
                return Ok(());
            }
            let frame_start = *pos;
            let payload_start = *pos + FRAME_HEADER;
            let payload_end = payload_start + len;
            if kind == TYPE_HEADERS {
                match headers_payload(&self.input[payload_start..payload_end], flags) {
                    Some((priority, range)) => {
                        let fragment = self.input
                            [payload_start + range.start..payload_start + range.end]
                            .to_vec();
                        self.block = Some(Block {
                            stream_id,
                            end_stream: flags & FLAG_END_STREAM != 0,
                            priority,
                            fragment,
                            raw: Vec::new(),
                        });
                    }
                    None => return self.give_up(pos, RewriteError::BadHeadersFrame),
                }
            } else if let Some(block) = self.block.as_mut() {
                block
                    .fragment
                    .extend_from_slice(&self.input[payload_start..payload_end]);
            }
            let inspecting = self.mode == Mode::Inspect;
            let too_large = match self.block.as_mut() {
                Some(block) => {
                    if inspecting {
                        block
                            .raw
                            .extend_from_slice(&self.input[frame_start..payload_end]);
                    }
                    block.fragment.len() > MAX_BLOCK
                }
                None => false,
            };
            *pos = payload_end;
            if too_large {
                return self.give_up(pos, RewriteError::BlockTooLarge);
            }
            if flags & FLAG_END_HEADERS != 0 {
                if let Some(block) = self.block.take() {
                    self.finish_block(block, pos)?;
                }
            }
        }
    }

    fn block_stream(&self) -> Option<u32> {
        self.block.as_ref().map(|b| b.stream_id)
    }

    /// Decodes a complete header block and emits it: unchanged (deciding pass-through) or
    /// re-encoded.
    fn finish_block(&mut self, block: Block, pos: &mut usize) -> Result<(), RewriteError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut oversized = false;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            // RFC 7541 §4.1 entry size; an HPACK bomb stops being collected at MAX_BLOCK.
            size += name.len() + value.len() + 32;
            if size > MAX_BLOCK {
                oversized = true;
            } else {
                fields.push((name.into_owned(), value.into_owned()));
            }
        });
        let mode = self.mode;
        if let Err(e) = decoded {
            self.block = Some(block);
            return self.give_up(pos, RewriteError::Hpack(e.to_string()));
        }
        if oversized {
            self.block = Some(block);
            return self.give_up(pos, RewriteError::BlockTooLarge);
        }
        let bad_authority = fields
            .iter()
            .any(|(n, v)| n.as_slice() == b":authority" && !acceptable(v));
        if mode == Mode::Inspect && !bad_authority {
            self.output.extend_from_slice(&block.raw);
            self.mode = Mode::PassThrough;
            return Ok(());
        }
        if mode == Mode::Inspect {
            tracing::debug!(
                "unix socket client sent an :authority h2 refuses; its header blocks are rewritten to :authority: localhost"
            );
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            let value = if name.as_slice() == b":authority" && !acceptable(value) {
                UNIX_AUTHORITY
            } else {
                value.as_slice()
            };
            encode_literal(&mut encoded, name, value);
        }
        emit_headers(
            &mut self.output,
            block.stream_id,
            block.end_stream,
            block.priority,
            &encoded,
        );
        Ok(())
    }
}

/// The priority fields and the header block fragment's range in a HEADERS payload, or
/// `None` if the padding or priority fields do not fit.
fn headers_payload(p: &[u8], flags: u8) -> Option<(Option<[u8; 5]>, std::ops::Range<usize>)> {
    let mut start = 0;
    let mut end = p.len();
    if flags & FLAG_PADDED != 0 {
        let pad = usize::from(*p.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    let priority = if flags & FLAG_PRIORITY != 0 {
        let fields: [u8; 5] = p.get(start..start + 5)?.try_into().ok()?;
        start += 5;
        Some(fields)
    } else {
        None
    };
    (start <= end).then_some((priority, start..end))
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the bits above it.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

/// A header block as one HEADERS frame and as many CONTINUATIONs as the frame size needs.
fn emit_headers(
    out: &mut Vec<u8>,
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: &[u8],
) {
    let head_room = MAX_FRAME - priority.map_or(0, |p| p.len());
    let (first, mut rest) = block.split_at(block.len().min(head_room));
    let mut flags = 0;
    if end_stream {
        flags |= FLAG_END_STREAM;
    }
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let len = first.len() + priority.map_or(0, |p| p.len());
    frame_header(out, len, TYPE_HEADERS, flags, stream_id);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if more.is_empty() { FLAG_END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, stream_id);
        out.extend_from_slice(chunk);
        rest = more;
    }
}

/// A Unix socket connection whose client → server bytes go through a [`Rewriter`] until
/// it has decided that the connection needs none.
pub struct AuthorityFix<IO> {
    io: IO,
    state: Option<Box<Inspecting>>,
}

struct Inspecting {
    rewriter: Rewriter,
    chunk: Box<[u8]>,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    pub fn new(io: IO) -> Self {
        AuthorityFix {
            io,
            state: Some(Box::new(Inspecting {
                rewriter: Rewriter::new(),
                chunk: vec![0; READ_CHUNK].into_boxed_slice(),
                eof: false,
            })),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let Some(st) = this.state.as_mut() else {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            };
            if !st.rewriter.pending().is_empty() {
                let out = st.rewriter.take(buf.remaining());
                buf.put_slice(out);
                if st.rewriter.done() {
                    this.state = None;
                }
                return Poll::Ready(Ok(()));
            }
            if st.rewriter.done() {
                this.state = None;
                continue;
            }
            if st.eof {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut st.chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            let n = rb.filled().len();
            if n == 0 {
                st.eof = true;
                st.rewriter.finish();
                continue;
            }
            let (chunk, rewriter) = (&st.chunk[..n], &mut st.rewriter);
            rewriter
                .feed(chunk)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for AuthorityFix<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;
    /// A header block being read back: stream, END_STREAM, priority, fragment.
    type OpenBlock = (u32, bool, Option<[u8; 5]>, Vec<u8>);

    /// A frame of the rewriter's output, header blocks reassembled and decoded.
    #[derive(Debug, PartialEq)]
    enum Frame {
        Headers {
            stream_id: u32,
            end_stream: bool,
            priority: Option<[u8; 5]>,
            fields: Fields,
        },
        Other {
            kind: u8,
            flags: u8,
            stream_id: u32,
            payload: Vec<u8>,
        },
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    fn request(authority: &str, path: &str) -> Fields {
        fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "6977m"),
        ])
    }

    fn raw_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream_id);
        out.extend_from_slice(payload);
        out
    }

    /// A HEADERS frame and CONTINUATIONs of at most `split` block bytes each, encoded the
    /// way grpc-core does it (with the dynamic table).
    fn client_headers(
        enc: &mut loona_hpack::Encoder<'static>,
        stream_id: u32,
        f: &Fields,
        split: usize,
        padding: Option<u8>,
        priority: Option<[u8; 5]>,
    ) -> Vec<u8> {
        let block = enc.encode(f.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let chunks: Vec<&[u8]> = block.chunks(split.max(1)).collect();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let end_headers = if last { FLAG_END_HEADERS } else { 0 };
            if i == 0 {
                let mut payload = Vec::new();
                let mut flags = end_headers;
                if let Some(pad) = padding {
                    flags |= FLAG_PADDED;
                    payload.push(pad);
                }
                if let Some(p) = priority {
                    flags |= FLAG_PRIORITY;
                    payload.extend_from_slice(&p);
                }
                payload.extend_from_slice(chunk);
                payload.extend(std::iter::repeat_n(0, usize::from(padding.unwrap_or(0))));
                out.extend(raw_frame(TYPE_HEADERS, flags, stream_id, &payload));
            } else {
                out.extend(raw_frame(TYPE_CONTINUATION, end_headers, stream_id, chunk));
            }
        }
        out
    }

    /// Parses what h2 would read, decoding header blocks with a fresh decoder as h2 does.
    fn parse(bytes: &[u8]) -> Vec<Frame> {
        assert!(bytes.starts_with(PREFACE), "output lost the preface");
        let mut dec = loona_hpack::Decoder::new();
        let mut frames = Vec::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut open: Option<OpenBlock> = None;
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            assert!(len <= MAX_FRAME, "frame of {len} bytes");
            let payload = &rest[9..9 + len];
            rest = &rest[9 + len..];
            match kind {
                TYPE_HEADERS => {
                    assert!(open.is_none());
                    let (priority, range) = headers_payload(payload, flags).unwrap();
                    open = Some((
                        stream_id,
                        flags & FLAG_END_STREAM != 0,
                        priority,
                        payload[range].to_vec(),
                    ));
                }
                TYPE_CONTINUATION => open.as_mut().unwrap().3.extend_from_slice(payload),
                _ => {
                    assert!(open.is_none());
                    frames.push(Frame::Other {
                        kind,
                        flags,
                        stream_id,
                        payload: payload.to_vec(),
                    });
                    continue;
                }
            }
            if flags & FLAG_END_HEADERS != 0 {
                let (stream_id, end_stream, priority, block) = open.take().unwrap();
                frames.push(Frame::Headers {
                    stream_id,
                    end_stream,
                    priority,
                    fields: dec.decode(&block).unwrap(),
                });
            }
        }
        assert!(open.is_none(), "header block left open");
        frames
    }

    /// Feeds `input` in chunks of the given sizes (cycled) and collects the output.
    fn run(input: &[u8], chunks: &[usize]) -> Result<Vec<u8>, RewriteError> {
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunks[i % chunks.len()].clamp(1, rest.len());
            rw.feed(&rest[..n])?;
            rest = &rest[n..];
            i += 1;
            while !rw.pending().is_empty() {
                out.extend_from_slice(rw.take(1000));
            }
        }
        rw.finish();
        out.extend_from_slice(rw.pending());
        Ok(out)
    }

    fn data(stream_id: u32, payload: &[u8]) -> Vec<u8> {
        raw_frame(0x0, FLAG_END_STREAM, stream_id, payload)
    }

    fn settings() -> Vec<u8> {
        raw_frame(0x4, 0, 0, &[0, 4, 0, 0, 0xff, 0xff])
    }

    #[test]
    fn h2_refuses_the_authorities_grpc_clients_send_on_a_socket() {
        assert!(!acceptable(b"tmp%2Fkd%2Fkeyorch.sock")); // grpc-core >= 1.57
        assert!(!acceptable(b"/run/keyorch/keyorch.sock")); // grpc-java
        assert!(acceptable(b"localhost"));
        assert!(acceptable(b"127.0.0.1:7443"));
        assert!(acceptable(UNIX_AUTHORITY));
    }

    #[test]
    fn a_connection_with_a_valid_authority_is_copied_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        input.extend(client_headers(
            &mut enc,
            1,
            &request("localhost", "/a/B"),
            7,
            None,
            None,
        ));
        input.extend(data(1, b"\0\0\0\0\0"));
        // A later bad authority is h2's to refuse: the connection was decided.
        input.extend(client_headers(
            &mut enc,
            3,
            &request("x%2Fy", "/a/B"),
            100,
            None,
            None,
        ));
        for chunks in [&[1usize][..], &[3, 17], &[4096]] {
            assert_eq!(run(&input, chunks).unwrap(), input);
        }
    }

    #[test]
    fn a_connection_without_an_authority_is_copied_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        let f = fields(&[(":method", "POST"), (":scheme", "http"), (":path", "/a/B")]);
        input.extend(client_headers(&mut enc, 1, &f, 100, None, None));
        assert_eq!(run(&input, &[5]).unwrap(), input);
    }

    #[test]
    fn percent_encoded_socket_paths_become_localhost_on_every_request() {
        let mut enc = loona_hpack::Encoder::new();
        let bad = "tmp%2Fkd%2Fkeyorch.sock";
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        // The encoder indexes fields, so the second and third requests refer to the
        // client's dynamic table: the rewriter must track it to decode them.
        for (i, path) in ["/a/B", "/a/B", "/c/D"].iter().enumerate() {
            let id = 1 + 2 * i as u32;
            input.extend(client_headers(
                &mut enc,
                id,
                &request(bad, path),
                5,
                Some(3),
                None,
            ));
            input.extend(data(id, b"\0\0\0\0\0"));
        }
        for chunks in [&[1usize][..], &[2, 9, 30], &[4096]] {
            let frames = parse(&run(&input, chunks).unwrap());
            assert_eq!(frames.len(), 7);
            assert!(matches!(frames[0], Frame::Other { kind: 0x4, .. }));
            for (i, path) in ["/a/B", "/a/B", "/c/D"].iter().enumerate() {
                let id = 1 + 2 * i as u32;
                assert_eq!(
                    frames[1 + 2 * i],
                    Frame::Headers {
                        stream_id: id,
                        end_stream: false,
                        priority: None,
                        fields: request("localhost", path),
                    }
                );
                assert_eq!(
                    frames[2 + 2 * i],
                    Frame::Other {
                        kind: 0,
                        flags: FLAG_END_STREAM,
                        stream_id: id,
                        payload: b"\0\0\0\0\0".to_vec(),
                    }
                );
            }
        }
    }

    #[test]
    fn priority_end_stream_and_large_blocks_survive_the_rewrite() {
        let mut enc = loona_hpack::Encoder::new();
        let mut f = request("/run/keyorch.sock", "/a/B");
        f.push((b"x-big".to_vec(), vec![b'v'; 20_000]));
        let mut input = PREFACE.to_vec();
        let mut block = client_headers(&mut enc, 5, &f, 10_000, None, Some([0, 0, 0, 3, 16]));
        block[4] |= FLAG_END_STREAM;
        input.extend(block);
        let frames = parse(&run(&input, &[4096]).unwrap());
        let mut expected = f.clone();
        expected[3].1 = b"localhost".to_vec();
        assert_eq!(
            frames,
            vec![Frame::Headers {
                stream_id: 5,
                end_stream: true,
                priority: Some([0, 0, 0, 3, 16]),
                fields: expected,
            }]
        );
    }

    #[test]
    fn not_http2_is_left_to_hyper() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(input, &[3]).unwrap(), input);
    }

    #[test]
    fn malformed_input_goes_to_h2_unchanged_while_nothing_was_rewritten() {
        let mut input = PREFACE.to_vec();
        // An index that is in no table: h2 answers COMPRESSION_ERROR itself.
        input.extend(raw_frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x80 | 120]));
        input.extend(data(1, b"abc"));
        assert_eq!(run(&input, &[7]).unwrap(), input);
        // A CONTINUATION with no HEADERS before it.
        let mut input = PREFACE.to_vec();
        input.extend(raw_frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        assert_eq!(run(&input, &[100]).unwrap(), input);
    }

    #[test]
    fn malformed_input_closes_a_rewritten_connection() {
        let mut enc = loona_hpack::Encoder::new();
        let mut start = PREFACE.to_vec();
        start.extend(client_headers(
            &mut enc,
            1,
            &request("a%2Fb", "/a/B"),
            100,
            None,
            None,
        ));
        let mut input = start.clone();
        input.extend(raw_frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &[0x80 | 120]));
        assert!(matches!(run(&input, &[50]), Err(RewriteError::Hpack(_))));
        let mut input = start.clone();
        input.extend(raw_frame(TYPE_HEADERS, 0, 3, &[0x82]));
        input.extend(data(3, b"x"));
        assert!(matches!(
            run(&input, &[50]),
            Err(RewriteError::ExpectedContinuation)
        ));
        let mut input = start;
        input.extend(raw_frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            3,
            &vec![0x82; MAX_FRAME + 1],
        ));
        assert!(matches!(
            run(&input, &[50]),
            Err(RewriteError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn an_hpack_bomb_is_not_expanded() {
        // Each one-byte reference to a 4 KiB table entry would decode to 4 KiB.
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(client_headers(
            &mut enc,
            1,
            &request("a%2Fb", "/a/B"),
            100,
            None,
            None,
        ));
        let mut block = Vec::new();
        encode_literal(&mut block, b"x-bomb", &[b'b'; 4000]);
        block[0] = 0x40; // with incremental indexing: entry 62
        block.extend(std::iter::repeat_n(0x80 | 62, 1000));
        input.extend(raw_frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &block));
        assert!(matches!(
            run(&input, &[4096]),
            Err(RewriteError::BlockTooLarge)
        ));
    }

    #[test]
    fn integers_use_the_rfc_7541_prefix_coding() {
        // RFC 7541 C.1.1–C.1.3.
        let mut out = Vec::new();
        encode_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        encode_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        encode_int(&mut out, 0, 8, 42);
        assert_eq!(out, [42]);
    }

    #[tokio::test]
    async fn the_socket_wrapper_reads_what_the_rewriter_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(client_headers(
            &mut enc,
            1,
            &request("a%2Fb", "/a/B"),
            3,
            None,
            None,
        ));
        input.extend(data(1, &[7; 40_000]));
        let expected = run(&input, &[4096]).unwrap();
        let (mut client, server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(333) {
                client.write_all(chunk).await.unwrap();
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, expected);
        assert_ne!(got.len(), 0);
    }

    fn header_name() -> impl Strategy<Value = Vec<u8>> {
        "[a-z][a-z0-9-]{0,20}".prop_map(String::into_bytes)
    }

    proptest! {
        /// Whatever the headers, frame splits and read sizes, h2 decodes exactly the
        /// client's fields with only the authority replaced.
        #[test]
        fn rewritten_blocks_decode_to_the_client_fields(
            requests in prop::collection::vec(
                (prop::collection::vec((header_name(), prop::collection::vec(any::<u8>(), 0..300)), 0..12),
                 any::<bool>()),
                1..6),
            split in 1usize..400,
            chunks in prop::collection::vec(1usize..700, 1..5),
            pad in prop::option::of(0u8..20),
        ) {
            let mut enc = loona_hpack::Encoder::new();
            let mut input = PREFACE.to_vec();
            let mut expected = Vec::new();
            for (i, (extra, bad)) in requests.iter().enumerate() {
                let id = 1 + 2 * i as u32;
                let authority = if *bad || i == 0 { "var%2Frun%2Fk.sock" } else { "localhost" };
                let mut f = request(authority, "/p/Q");
                f.extend(extra.iter().cloned());
                input.extend(client_headers(&mut enc, id, &f, split, pad, None));
                f[3].1 = b"localhost".to_vec();
                expected.push(Frame::Headers { stream_id: id, end_stream: false, priority: None, fields: f });
            }
            let frames = parse(&run(&input, &chunks).unwrap());
            prop_assert_eq!(frames, expected);
        }
    }
}
