//! Trace replay: the three file formats, determinism, and clear errors on bad input.

use std::io::Write;

use cache_node::replay::{
    read_trace, replay_keys, run_replay, run_replay_with, ReplayError, TraceFormat,
};

/// A small skewed trace: a hot set of 20 keys interleaved with a cold stream.
fn generated_keys() -> Vec<u64> {
    let mut x = 0x1234_5678_9abc_def1u64;
    (0..20_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 {
                x % 20
            } else {
                1000 + x % 5000
            }
        })
        .collect()
}

fn write_gzip_text(path: &std::path::Path, keys: &[u64]) {
    let f = std::fs::File::create(path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    for (i, k) in keys.iter().enumerate() {
        writeln!(gz, "{k}").expect("write");
        if i == 5 {
            writeln!(gz, "*").expect("LIRS phase marker is skipped");
        }
    }
    gz.finish().expect("finish");
}

fn write_xz(path: &std::path::Path, keys: &[u64], width: usize) {
    let f = std::fs::File::create(path).expect("create");
    let mut xz = xz2::write::XzEncoder::new(f, 1);
    for k in keys {
        if width == 4 {
            xz.write_all(&(*k as u32).to_be_bytes()).expect("write");
        } else {
            xz.write_all(&k.to_be_bytes()).expect("write");
        }
    }
    xz.finish().expect("finish");
}

#[test]
fn all_formats_replay_to_the_same_deterministic_hit_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = generated_keys();
    let gz = dir.path().join("gen.trace.gz");
    let x32 = dir.path().join("gen.trace.xz");
    let x64 = dir.path().join("gen-u64.trace.xz");
    write_gzip_text(&gz, &keys);
    write_xz(&x32, &keys, 4);
    write_xz(&x64, &keys, 8);
    assert_eq!(TraceFormat::detect(&x64), Some(TraceFormat::XzU64));
    assert_eq!(read_trace(&gz, TraceFormat::GzipText).expect("gz"), keys);
    assert_eq!(read_trace(&x32, TraceFormat::XzU32).expect("xz32"), keys);

    let first = run_replay(&gz, 100).expect("replay");
    assert_eq!(first.accesses, keys.len() as u64);
    for path in [&gz, &x32, &x64] {
        let again = run_replay(path, 100).expect("replay");
        assert_eq!(
            (again.accesses, again.hits),
            (first.accesses, first.hits),
            "{path:?}"
        );
    }
    assert_eq!(replay_keys(keys.iter().copied(), 100).hits, first.hits);
    // The hot set fits: at least most of its half of the accesses hit.
    let rate = first.hit_rate_percent();
    assert!(rate > 45.0 && rate < 100.0, "{rate}");
}

#[test]
fn bad_traces_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.trace.gz");
    let f = std::fs::File::create(&bad).expect("create");
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(b"1\n2\nthree\n").expect("write");
    gz.finish().expect("finish");
    match run_replay(&bad, 10) {
        Err(ReplayError::Format { reason, .. }) => assert!(reason.contains("line 3"), "{reason}"),
        other => panic!("{other:?}"),
    }

    let odd = dir.path().join("odd.trace.xz");
    let f = std::fs::File::create(&odd).expect("create");
    let mut xz = xz2::write::XzEncoder::new(f, 1);
    xz.write_all(&[0, 0, 0, 1, 9]).expect("write");
    xz.finish().expect("finish");
    assert!(matches!(
        run_replay_with(&odd, TraceFormat::XzU32, 10),
        Err(ReplayError::Format { .. })
    ));

    let missing = dir.path().join("missing.trace.gz");
    assert!(matches!(
        run_replay(&missing, 10),
        Err(ReplayError::Io { .. })
    ));
    assert!(matches!(
        run_replay(&dir.path().join("trace.txt"), 10),
        Err(ReplayError::Format { .. })
    ));
}

/// The u64 format is read as big-endian 64-bit keys, all 64 bits of them. The keys of the test above are
/// all below 2^32, so a reader that dropped the high half or read little-endian would pass it; here the
/// first three keys differ only in their high 32 bits, and the file's bytes are written out by hand
/// (not with `to_be_bytes`, which a wrong reader might mirror), none of them a palindrome. Dropping the
/// high half makes the first three keys one; reading little-endian gives 0x0807060504030201 for the
/// fourth; a u32 reader gives twice as many keys.
#[test]
fn xz_u64_keys_are_read_big_endian_with_every_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("high-u64.trace.xz");
    let bytes: [[u8; 8]; 5] = [
        [0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07],
        [0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07],
        [0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07],
        [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
    ];
    let f = std::fs::File::create(&path).expect("create");
    let mut xz = xz2::write::XzEncoder::new(f, 1);
    xz.write_all(bytes.as_flattened()).expect("write");
    xz.finish().expect("finish");
    assert_eq!(TraceFormat::detect(&path), Some(TraceFormat::XzU64));
    assert_eq!(
        read_trace(&path, TraceFormat::XzU64).expect("xz64"),
        vec![
            0x0000_0001_0000_0007,
            0x0000_0002_0000_0007,
            0x8000_0000_0000_0007,
            0x0102_0304_0506_0708,
            0xffff_ffff_ffff_fffe,
        ]
    );
    // The replay keeps them apart too: at a capacity that holds all five, each key misses once and the
    // three that share their low half hit when they come again (with the high half dropped those three
    // would be one key: 3 misses and 8 hits).
    let mut again = bytes.to_vec();
    again.extend_from_slice(&bytes[..3]);
    again.extend_from_slice(&bytes[..3]);
    let f = std::fs::File::create(&path).expect("create");
    let mut xz = xz2::write::XzEncoder::new(f, 1);
    xz.write_all(again.as_flattened()).expect("write");
    xz.finish().expect("finish");
    let report = run_replay(&path, 8).expect("replay");
    assert_eq!((report.accesses, report.hits), (11, 6));
}
