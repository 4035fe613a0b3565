//! `keyorch bench hpack`: CPU cost of the Unix socket's `:authority` rewriter per header
//! block, in this process (no daemon): the same code keyorchd runs on every header block of
//! a connection it rewrites (grpcio's). Huffman-coded blocks are measured against a block
//! of the same size made of raw (not Huffman-coded) strings, the baseline in the same run;
//! docs/benchmarks.md, "HPACK on the Unix socket".

use std::time::{Duration, Instant};

use clap::Args;

use super::bench_stats::{median_ratio, micros, Summary};
use super::error::CliError;
use super::output::OutputFormat;
use super::{Context, Outcome};
use crate::api::authority::Rewriter;

#[derive(Debug, Clone, PartialEq, Args)]
pub struct BenchHpackArgs {
    /// Timed rewrites of each block kind.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rounds: u32,
}

/// A header block kind: its name and how each of its fields is written.
struct Kind {
    name: &'static str,
    what: &'static str,
    field: fn(&mut Vec<u8>),
}

/// `:path` (static index 4) as a literal without indexing, and a value of 22 × 'a'.
fn raw_field(out: &mut Vec<u8>) {
    out.push(0x04);
    out.push(22);
    out.extend_from_slice(&[b'a'; 22]);
}

/// The same field with its value Huffman-coded: 22 × 'a' (code 00011) is 110 bits,
/// padded with ones to 14 bytes.
fn huffman_field(out: &mut Vec<u8>) {
    out.push(0x04);
    out.push(0x80 | 14);
    let mut bits: u128 = 0;
    for _ in 0..22 {
        bits = (bits << 5) | 0b00011;
    }
    bits = (bits << 2) | 0b11;
    out.extend_from_slice(&bits.to_be_bytes()[2..]);
}

/// The cheapest Huffman string there is: empty, two bytes per field.
fn empty_huffman_field(out: &mut Vec<u8>) {
    out.push(0x04);
    out.push(0x80);
}

/// Empty raw strings: as many fields per byte as the empty Huffman ones, so the two
/// differ only by the Huffman decoding.
fn empty_raw_field(out: &mut Vec<u8>) {
    out.push(0x04);
    out.push(0x00);
}

const KINDS: [Kind; 4] = [
    Kind {
        name: "raw",
        what: "raw strings (baseline)",
        field: raw_field,
    },
    Kind {
        name: "huffman",
        what: "Huffman-coded strings",
        field: huffman_field,
    },
    Kind {
        name: "empty-huffman",
        what: "empty Huffman strings",
        field: empty_huffman_field,
    },
    Kind {
        name: "empty-raw",
        what: "empty raw strings",
        field: empty_raw_field,
    },
];

/// Bytes of header block after the first field: small enough that 1,500 empty fields stay
/// within the rewriter's 64 KiB of decoded fields (32 bytes of overhead each, RFC 7541
/// §4.1), so every kind is decoded and rewritten, not refused.
const BLOCK: usize = 3_000;

/// A client's stream: preface, SETTINGS, and one HEADERS frame whose block starts with the
/// `:authority` grpcio sends on a socket (so the connection is rewritten) and is filled up
/// to [`BLOCK`] bytes with fields of `kind`.
fn stream(kind: &Kind) -> Vec<u8> {
    let mut block = vec![0x01, 9];
    block.extend_from_slice(b"/run/sock");
    let mut fields = Vec::new();
    while fields.len() < BLOCK {
        (kind.field)(&mut fields);
    }
    block.extend_from_slice(&fields);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = block.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x1, 0x4]);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// One timed rewrite of the whole stream; the output length keeps the work observable.
fn rewrite(stream: &[u8]) -> (Duration, usize) {
    let started = Instant::now();
    let mut rw = Rewriter::new();
    let fed = rw.feed(stream).is_ok();
    let out = rw.take(usize::MAX).len();
    (started.elapsed(), out + usize::from(fed))
}

struct Row {
    kind: &'static Kind,
    bytes: usize,
    summary: Summary,
    output: usize,
}

pub async fn hpack(args: BenchHpackArgs, ctx: &Context) -> Result<Outcome, CliError> {
    let streams: Vec<Vec<u8>> = KINDS.iter().map(stream).collect();
    for s in &streams {
        rewrite(s);
    }
    // The kinds take turns each round, so a noisy neighbour weighs on all of them alike.
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); KINDS.len()];
    let mut outputs = vec![0usize; KINDS.len()];
    for _ in 0..args.rounds {
        for (i, s) in streams.iter().enumerate() {
            let (took, out) = rewrite(s);
            latencies[i].push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            outputs[i] = out;
        }
    }
    let rows: Vec<Row> = KINDS
        .iter()
        .zip(latencies)
        .zip(streams.iter().zip(outputs))
        .map(|((kind, l), (s, output))| Row {
            kind,
            bytes: s.len(),
            summary: Summary::from_sequential(l),
            output,
        })
        .collect();
    print(&rows, ctx.output);
    Ok(Outcome::Success)
}

fn per_kib(row: &Row) -> f64 {
    micros(row.summary.p50) * 1024.0 / row.bytes as f64
}

fn print(rows: &[Row], format: OutputFormat) {
    let base = &rows[0].summary;
    match format {
        OutputFormat::Table => {
            println!(
                "{:<14} {:<24} {:>7} {:>10} {:>10} {:>10} {:>8}",
                "block", "fields", "bytes", "p50 µs", "p99 µs", "µs/KiB", "÷ raw"
            );
            for r in rows {
                println!(
                    "{:<14} {:<24} {:>7} {:>10.1} {:>10.1} {:>10.2} {:>8.2}",
                    r.kind.name,
                    r.kind.what,
                    r.bytes,
                    micros(r.summary.p50),
                    micros(r.summary.p99),
                    per_kib(r),
                    median_ratio(base, &r.summary).unwrap_or(f64::NAN),
                );
            }
        }
        OutputFormat::Json => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "block": r.kind.name,
                        "bytes": r.bytes,
                        "rounds": r.summary.ops,
                        "p50_us": micros(r.summary.p50),
                        "p99_us": micros(r.summary.p99),
                        "us_per_kib": per_kib(r),
                        "p50_over_raw": median_ratio(base, &r.summary),
                        "output_bytes": r.output,
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "hpack": rows }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's stream is rewritten (a `:authority` h2 refuses) and its fields decode:
    /// the bench measures the decoding path, not an early refusal.
    #[test]
    fn every_block_kind_is_decoded_and_rewritten() {
        for kind in &KINDS {
            let s = stream(kind);
            let mut rw = Rewriter::new();
            rw.feed(&s).unwrap_or_else(|e| panic!("{}: {e}", kind.name));
            let out = rw.take(usize::MAX).to_vec();
            assert!(
                out.windows(9).any(|w| w == b"localhost"),
                "{}: not rewritten",
                kind.name
            );
            assert!(s.len() > BLOCK, "{}", kind.name);
        }
    }

    /// The Huffman field is the raw field's value, coded.
    #[test]
    fn the_huffman_field_decodes_to_the_raw_value() {
        let mut coded = Vec::new();
        huffman_field(&mut coded);
        let mut dec = loona_hpack::Decoder::new();
        let fields = dec.decode(&coded).expect("decodes");
        assert_eq!(fields, vec![(b":path".to_vec(), vec![b'a'; 22])]);
    }
}
