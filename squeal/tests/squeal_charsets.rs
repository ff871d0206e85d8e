//! End to end on the real stack (MariaDB primary + Kafka): text columns in latin1, ucs2, utf16,
//! utf16le, utf32, cp1251 (VARCHAR and CHAR, ENUM and SET names) and every 8-bit character set
//! squeal converts give exactly the keys an application builds from the values it reads back
//! through a utf8mb4 connection; a key column in a character set squeal cannot convert gives
//! `flush_table` for its table and an error.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use mysql_async::prelude::Queryable;

use common::{has_key, key_safe, Scenario, Squeal, TestResult, TopicReader};
use integration::{Stack, StackOptions};

/// The 8-bit character sets squeal converts (README, "Character sets"); each gets one column of
/// the `sweep` table, written with every byte 0x00–0xFF.
const SWEEP: [&str; 24] = [
    "ascii", "latin1", "latin2", "latin5", "latin7", "greek", "hebrew", "cp1250", "cp1251",
    "cp1256", "cp1257", "koi8r", "koi8u", "cp850", "cp852", "cp866", "keybcs2", "macroman",
    "macce", "armscii8", "geostd8", "dec8", "hp8", "tis620",
];

/// `texts` columns and the key prefix of each one's template (`prefix{column}`).
const TEXT_KEYS: [(&str, &str); 11] = [
    ("id", "t:"),
    ("l1", "l:"),
    ("u2", "lu:"),
    ("u16", "u16:"),
    ("le", "le:"),
    ("u32", "u32:"),
    ("cy", "cy:"),
    ("c2", "c2:"),
    ("c4", "c4:"),
    ("en", "en:"),
    ("st", "st:"),
];

const TEXTS: &str = "CREATE TABLE squeal_test.texts (
    id INT PRIMARY KEY,
    l1 VARCHAR(50) CHARACTER SET latin1,
    u2 VARCHAR(50) CHARACTER SET ucs2,
    u16 VARCHAR(50) CHARACTER SET utf16,
    le VARCHAR(50) CHARACTER SET utf16le,
    u32 VARCHAR(50) CHARACTER SET utf32,
    cy VARCHAR(50) CHARACTER SET cp1251,
    c2 CHAR(10) CHARACTER SET ucs2,
    c4 CHAR(10) CHARACTER SET utf32,
    en ENUM('Café', 'Thé€') CHARACTER SET latin1,
    st SET('Ё', 'b™', 'Ж') CHARACTER SET cp1251)";

fn rules() -> String {
    let mut rules = String::from(
        "[[rules]]\ntable = \"squeal_test.markers\"\nkeys = [\"marker:{id}\"]\n\n\
         [[rules]]\ntable = \"squeal_test.sj\"\nkeys = [\"sj:{sj}\"]\n\n\
         [[rules]]\ntable = \"squeal_test.sur\"\nkeys = [\"sur:{u2}\"]\n\n\
         [[rules]]\ntable = \"squeal_test.texts\"\nkeys = [",
    );
    let texts: Vec<String> = TEXT_KEYS
        .iter()
        .map(|(c, p)| format!("\"{p}{{{c}}}\""))
        .collect();
    rules.push_str(&texts.join(", "));
    rules.push_str("]\n\n[[rules]]\ntable = \"squeal_test.sweep\"\nkeys = [");
    let sweep: Vec<String> = SWEEP
        .iter()
        .map(|cs| format!("\"sw:{cs}:{{c_{cs}}}\""))
        .collect();
    rules.push_str(&sweep.join(", "));
    rules.push_str("]\n");
    rules
}

/// The rows of `sql` as the application reads them: UTF-8 text (the connection is utf8mb4).
async fn read_back(
    conn: &mut mysql_async::Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, Box<dyn std::error::Error + Send + Sync>> {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await?;
    let mut out = Vec::new();
    for row in rows {
        let mut values = Vec::new();
        for i in 0..row.len() {
            values.push(match row.as_ref(i) {
                Some(mysql_async::Value::Bytes(b)) => {
                    Some(String::from_utf8(b.clone()).expect("a utf8mb4 client reads UTF-8"))
                }
                Some(mysql_async::Value::NULL) | None => None,
                Some(v) => Some(v.as_sql(true).trim_matches('\'').to_owned()),
            });
        }
        out.push(values);
    }
    Ok(out)
}

/// The one value `sql` selects, as text.
async fn read_hex(
    conn: &mut mysql_async::Conn,
    sql: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let value: Option<String> = conn.query_first(sql).await?;
    Ok(value.unwrap_or_default())
}

/// The keys the application builds from what it read: `prefix` + key-safe value, none for NULL.
fn app_keys(prefixes: &[String], rows: &[Vec<Option<String>>]) -> BTreeSet<String> {
    rows.iter()
        .flat_map(|row| {
            prefixes
                .iter()
                .zip(row)
                .filter_map(|(p, v)| v.as_ref().map(|v| format!("{p}{}", key_safe(v))))
        })
        .collect()
}

fn text_prefixes() -> Vec<String> {
    TEXT_KEYS.iter().map(|(_, p)| p.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_in_every_charset_gives_the_keys_the_application_builds() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let primary = stack.primary();
    let mut conn = primary.connect().await?;
    // The application's connection: it reads (and writes) UTF-8.
    conn.query_drop("SET NAMES utf8mb4").await?;
    let sweep_columns: Vec<String> = SWEEP
        .iter()
        .map(|cs| format!("c_{cs} VARCHAR(300) CHARACTER SET {cs}"))
        .collect();
    for sql in [
        "CREATE DATABASE squeal_test".to_owned(),
        "CREATE TABLE squeal_test.markers (id INT PRIMARY KEY)".to_owned(),
        TEXTS.to_owned(),
        "CREATE TABLE squeal_test.sj (id INT PRIMARY KEY, sj VARCHAR(20) CHARACTER SET sjis)"
            .to_owned(),
        "CREATE TABLE squeal_test.sur (id INT PRIMARY KEY, u2 VARCHAR(10) CHARACTER SET ucs2)"
            .to_owned(),
        format!(
            "CREATE TABLE squeal_test.sweep (id INT PRIMARY KEY, {})",
            sweep_columns.join(", ")
        ),
    ] {
        conn.query_drop(sql).await?;
    }
    let scenario = Scenario::new(&stack, "inv_charsets", 1, &rules()).await?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), "inv_charsets")?;

    // Written through the UTF-8 connection, as an application writes.
    conn.query_drop(
        "INSERT INTO squeal_test.texts VALUES
         (1, 'Café€™', 'Café€™', 'Café€™😀', 'Café€™😀', 'Café€™😀', 'Привет, мир', 'ab', 'Thé€',
          'Café', 'Ё,b™')",
    )
    .await?;
    conn.query_drop("INSERT INTO squeal_test.sj VALUES (1, 'abc')")
        .await?;
    // A lone surrogate, which MariaDB stores in a ucs2 column and sends on as bytes that are not
    // UTF-8: no key the application builds, yet not a NULL either.
    conn.query_drop("INSERT INTO squeal_test.sur VALUES (1, UNHEX('D800'))")
        .await?;
    let stored = read_hex(&mut conn, "SELECT HEX(u2) FROM squeal_test.sur").await?;
    assert_eq!(stored, "D800", "the server must store the lone surrogate");
    // Bytes no UTF-8 client can write: latin1's five bytes cp1252 leaves undefined (the server
    // reads them back as U+0081, U+008D, U+008F, U+0090, U+009D), cp1251's undefined 0x98 (read
    // back as `?`), and Cyrillic as raw cp1251.
    conn.query_drop(
        "INSERT INTO squeal_test.texts (id, l1, cy, c2) VALUES
         (2, UNHEX('818D8F909D8C'), UNHEX('A8B8B998CFF0E8E2E5F2'), 'x y')",
    )
    .await?;
    let all_bytes: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let sweep_values = vec![format!("UNHEX('{all_bytes}')"); SWEEP.len()];
    conn.query_drop(format!(
        "INSERT INTO squeal_test.sweep VALUES (1, {})",
        sweep_values.join(", ")
    ))
    .await?;
    let select_texts = format!(
        "SELECT {} FROM squeal_test.texts ORDER BY id",
        TEXT_KEYS.map(|(c, _)| c).join(", ")
    );
    let select_sweep = format!(
        "SELECT {} FROM squeal_test.sweep",
        SWEEP.map(|cs| format!("c_{cs}")).join(", ")
    );
    let texts_before = read_back(&mut conn, &select_texts).await?;
    let sweep_rows = read_back(&mut conn, &select_sweep).await?;
    assert_eq!(texts_before[0][1].as_deref(), Some("Café€™"));
    assert_eq!(
        texts_before[1][1].as_deref(),
        Some("\u{81}\u{8D}\u{8F}\u{90}\u{9D}Œ"),
        "MariaDB reads latin1 as cp1252, its undefined bytes as C1 controls"
    );
    assert_eq!(texts_before[1][6].as_deref(), Some("Ёё№?Привет"));
    // UPDATE: the before image (the old values) and the after image both give keys.
    conn.query_drop(
        "UPDATE squeal_test.texts SET l1 = 'Œuvre', u2 = 'Żółw', le = 'ß', u32 = 'Ω',
         cy = 'Ёж', en = 'Thé€', st = 'Ж' WHERE id = 1",
    )
    .await?;
    let texts_after = read_back(&mut conn, &select_texts).await?;
    conn.query_drop("INSERT INTO squeal_test.markers VALUES (1)")
        .await?;
    let seen = reader
        .read_until(Duration::from_secs(90), |r| has_key(r, "marker:1"))
        .await;
    assert!(
        seen,
        "the marker never reached the topic: {}",
        squeal.log_text()
    );
    let published = reader.all_keys();

    let mut expected = app_keys(&text_prefixes(), &texts_before);
    expected.extend(app_keys(&text_prefixes(), &texts_after));
    let sweep_prefixes: Vec<String> = SWEEP.iter().map(|cs| format!("sw:{cs}:")).collect();
    expected.extend(app_keys(&sweep_prefixes, &sweep_rows));
    expected.insert("marker:1".into());
    // sjis has no conversion in squeal: its table gets flush_table instead of a key that could
    // differ from the application's.
    let sj_flushed = reader.records.iter().any(|r| {
        r.changes.iter().any(|c| {
            c.op == invalidation::Operation::FlushTable
                && c.table.as_ref().is_some_and(|t| t.name == "sj")
        })
    });
    assert!(sj_flushed, "no flush_table for the sjis table");
    // The surrogate row's key cannot be rendered: flush_table for its table, not a skipped key
    // as for NULL (which left the application's entry stale until 2026-12-01).
    let sur_flushed = reader.records.iter().any(|r| {
        r.changes.iter().any(|c| {
            c.op == invalidation::Operation::FlushTable
                && c.table.as_ref().is_some_and(|t| t.name == "sur")
        })
    });
    assert!(
        sur_flushed,
        "no flush_table for the table whose key column holds a lone surrogate"
    );

    let missing: Vec<_> = expected.difference(&published).collect();
    let extra: Vec<_> = published.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "keys differ from the application's:\n  not published: {missing:?}\n  published, \
         not the application's: {extra:?}"
    );
    // A few spelled out, so a reader sees what the application sees.
    for key in [
        "l:Café€™",
        "l:Œuvre",
        "lu:Café€™",
        "lu:Żółw",
        "u16:Café€™😀",
        "le:Café€™😀",
        "u32:Café€™😀",
        "cy:Привет,%20мир",
        "cy:Ёё№?Привет",
        "c2:ab",
        "c2:x%20y",
        "c4:Thé€",
        "en:Café",
        "st:Ё,b™",
        "en:Thé€",
        "st:Ж",
    ] {
        assert!(published.contains(key), "{key} not published");
    }
    let log = squeal.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("character set sjis")),
        "the unconvertible column is reported: {log}"
    );

    let status = squeal.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM ends squeal cleanly: {status:?}"
    );
    Ok(())
}
