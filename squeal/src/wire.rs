//! Classifies one binlog [`Event`] (as mysql_common framed it) into what squeal acts on, for both
//! MySQL's forms (GTID event, v2 row events, ROWS_QUERY) and MariaDB's (GTID 162, ANNOTATE_ROWS
//! 160, v1 row events). Pure: no I/O, so it is tested on byte vectors.

use std::io;

use mysql_async::binlog::events::{
    Event, ExecuteLoadQueryEvent, GtidEvent, PreviousGtidsEvent, QueryEvent, RotateEvent,
    RowsQueryEvent, TransactionPayloadEvent,
};
use mysql_async::binlog::EventType;

use invalidation::Gtid;

use crate::events::{self, MariaGtidEvent, Xid};
use crate::gtid_set::GtidSet;

/// What an event means to squeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// FORMAT_DESCRIPTION: from here on the reader knows the checksum algorithm.
    FormatDescription,
    /// ROTATE: the next events come from `name` at `pos`; `raw_name` keeps the bytes as sent.
    Rotate {
        /// Name bytes as the event carries them (may include a CRC trailer before the first FDE).
        raw_name: Vec<u8>,
        /// Position in the new file.
        pos: u64,
    },
    /// QUERY: statement text and default schema.
    Query {
        /// Default database of the statement.
        schema: String,
        /// Statement text.
        sql: String,
    },
    /// XID: commit of a transactional group.
    Xid,
    /// TABLE_MAP (parsed again by the caller, which keeps mysql_common's map).
    TableMap,
    /// Row changes (v1, v2 or partial).
    Rows,
    /// MariaDB row changes with compressed row data (`log_bin_compress=ON`, types 166–171):
    /// [`decompress_rows`] turns the event into the plain rows event it stands for.
    CompressedRows {
        /// The table id (in the clear), so unruled tables are skipped without decompressing.
        table_id: u64,
    },
    /// A MySQL TRANSACTION_PAYLOAD (`binlog_transaction_compression=ON`) whose payload was
    /// verified to decompress to its stated size; the stream then yields the events inside it.
    TransactionPayload,
    /// An event that may carry data changes squeal cannot map (an INCIDENT, pre-5.0 LOAD DATA
    /// events, an event type squeal does not know that is not marked ignorable): the reason.
    Unsupported(String),
    /// Statement text of the following row events (MySQL ROWS_QUERY or MariaDB ANNOTATE_ROWS).
    StatementText(String),
    /// A MySQL GTID (`uuid:gno`, or `uuid:tag:gno` on 8.4), starting a transaction.
    MySqlGtid {
        /// The GTID as records carry it (without the tag).
        gtid: Gtid,
        /// The MySQL 8.4 tag, lowercase; empty when untagged. Part of the GTID's identity.
        tag: String,
    },
    /// MySQL PREVIOUS_GTIDS: the GTIDs executed before the binlog file it starts.
    PreviousGtids(GtidSet),
    /// A MariaDB GTID event.
    MariaGtid(MariaGtidEvent),
    /// A MariaDB GTID_LIST event: the GTID state at the start of a binlog file.
    MariaGtidList(Vec<Gtid>),
    /// XA PREPARE: the end of an XA transaction's prepared part (its commit comes later, alone),
    /// or, with `one_phase`, a MySQL `XA COMMIT ... ONE PHASE` (a commit).
    XaPrepare {
        /// The XA transaction id.
        xid: Xid,
        /// The transaction committed here (no separate XA COMMIT follows).
        one_phase: bool,
    },
    /// Heartbeat from an idle server.
    Heartbeat,
    /// Anything else squeal does not need.
    Other,
}

fn read_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Classifies one event.
pub fn decode(event: &Event) -> io::Result<Decoded> {
    use EventType::*;
    let header = event.header();
    let raw = header.event_type_raw();
    match raw {
        events::MARIADB_QUERY_COMPRESSED_EVENT => {
            let post = post_header_len(event, raw).unwrap_or(13);
            let (schema, sql) =
                events::decode_mariadb_query_compressed(event.data(), post).map_err(read_err)?;
            return Ok(Decoded::Query { schema, sql });
        }
        events::MARIADB_ROWS_COMPRESSED_FIRST..=events::MARIADB_ROWS_COMPRESSED_LAST => {
            let id = event.data().get(..6).ok_or_else(|| {
                read_err(format!(
                    "compressed rows event of {} bytes",
                    event.data().len()
                ))
            })?;
            let table_id = id.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b));
            return Ok(Decoded::CompressedRows { table_id });
        }
        events::MARIADB_BINLOG_CHECKPOINT_EVENT | events::MARIADB_START_ENCRYPTION_EVENT => {
            return Ok(Decoded::Other)
        }
        // MySQL 8.0.26+ HEARTBEAT_LOG_EVENT_V2 (mysql_common does not name it).
        MYSQL_HEARTBEAT_V2 => return Ok(Decoded::Heartbeat),
        events::MARIADB_GTID_EVENT => {
            return events::decode_mariadb_gtid(event.data(), header.server_id())
                .map(Decoded::MariaGtid)
                .map_err(read_err)
        }
        events::MARIADB_GTID_LIST_EVENT => {
            return events::decode_mariadb_gtid_list(event.data())
                .map(Decoded::MariaGtidList)
                .map_err(read_err)
        }
        events::MARIADB_ANNOTATE_ROWS_EVENT => {
            return Ok(Decoded::StatementText(events::decode_mariadb_annotate(
                event.data(),
            )))
        }
        _ => {}
    }
    let Ok(ty) = header.event_type() else {
        // A replica stops at an event type it does not know unless the event says it may be
        // ignored; squeal cannot tell whether such an event changed rows either.
        return Ok(if header.flags_raw() & LOG_EVENT_IGNORABLE_F != 0 {
            Decoded::Other
        } else {
            Decoded::Unsupported(format!(
                "binlog event type {raw}, unknown to squeal and not marked ignorable"
            ))
        });
    };
    Ok(match ty {
        FORMAT_DESCRIPTION_EVENT => Decoded::FormatDescription,
        ROTATE_EVENT => {
            let re: RotateEvent<'_> = event.read_event()?;
            Decoded::Rotate {
                raw_name: re.name_raw().to_vec(),
                pos: re.position(),
            }
        }
        QUERY_EVENT => {
            let q: QueryEvent<'_> = event.read_event()?;
            Decoded::Query {
                schema: q.schema().into_owned(),
                sql: q.query().into_owned(),
            }
        }
        XID_EVENT => Decoded::Xid,
        TABLE_MAP_EVENT => Decoded::TableMap,
        WRITE_ROWS_EVENT_V1
        | UPDATE_ROWS_EVENT_V1
        | DELETE_ROWS_EVENT_V1
        | WRITE_ROWS_EVENT
        | UPDATE_ROWS_EVENT
        | DELETE_ROWS_EVENT
        | PARTIAL_UPDATE_ROWS_EVENT => Decoded::Rows,
        ROWS_QUERY_EVENT => {
            let rq: RowsQueryEvent<'_> = event.read_event()?;
            Decoded::StatementText(rq.query().into_owned())
        }
        GTID_EVENT | GTID_TAGGED_LOG_EVENT => {
            let g: GtidEvent = event.read_event()?;
            Decoded::MySqlGtid {
                gtid: Gtid::MySql {
                    uuid: g.sid(),
                    gno: g.gno(),
                },
                tag: g.tag().map_or_else(String::new, |t| t.to_ascii_lowercase()),
            }
        }
        PREVIOUS_GTIDS_EVENT => {
            let p: PreviousGtidsEvent<'_> = event.read_event()?;
            let mut set = GtidSet::new();
            for sid in p.sids() {
                let tag = sid
                    .tag()
                    .map_or_else(String::new, |t| t.to_ascii_lowercase());
                for i in sid.intervals() {
                    set.insert_interval(sid.uuid(), &tag, i.start(), i.end());
                }
            }
            Decoded::PreviousGtids(set)
        }
        HEARTBEAT_EVENT => Decoded::Heartbeat,
        XA_PREPARE_LOG_EVENT => {
            let (xid, one_phase) = events::decode_xa_prepare(event.data()).map_err(read_err)?;
            Decoded::XaPrepare { xid, one_phase }
        }
        TRANSACTION_PAYLOAD_EVENT => {
            verify_payload(event)?;
            Decoded::TransactionPayload
        }
        EXECUTE_LOAD_QUERY_EVENT => {
            // A statement-logged `LOAD DATA`: classified (and refused) like a QUERY.
            let q: ExecuteLoadQueryEvent<'_> = event.read_event()?;
            Decoded::Query {
                schema: q.schema().into_owned(),
                sql: q.query().into_owned(),
            }
        }
        INCIDENT_EVENT => Decoded::Unsupported(
            "an INCIDENT event (the server reports that changes may be missing from its binlog, \
             as a replica would stop)"
                .into(),
        ),
        LOAD_EVENT
        | CREATE_FILE_EVENT
        | EXEC_LOAD_EVENT
        | NEW_LOAD_EVENT
        | PRE_GA_WRITE_ROWS_EVENT
        | PRE_GA_UPDATE_ROWS_EVENT
        | PRE_GA_DELETE_ROWS_EVENT => {
            Decoded::Unsupported(format!("a pre-5.1 data change event ({ty:?})"))
        }
        _ => Decoded::Other,
    })
}

/// MySQL's HEARTBEAT_LOG_EVENT_V2.
const MYSQL_HEARTBEAT_V2: u8 = 0x29;
/// LOG_EVENT_IGNORABLE_F: a replica that does not know the event type may skip it.
const LOG_EVENT_IGNORABLE_F: u16 = 0x80;

/// The format description's post-header length for `event_type`, when it declares one.
fn post_header_len(event: &Event, event_type: u8) -> Option<usize> {
    let lengths = event.fde().event_type_header_lengths();
    let len = *lengths.get(usize::from(event_type).checked_sub(1)?)?;
    (len > 0).then_some(usize::from(len))
}

/// A TRANSACTION_PAYLOAD event must decompress to exactly its stated size. mysql_async then
/// yields the events inside it, but if its own decompression fails it yields none, silently (it
/// drops the error), and the transaction's rows would be lost: so squeal decompresses the payload
/// once itself (streaming, nothing kept) and stops on any failure. Same bytes, same library:
/// when this succeeds, so does mysql_async's.
fn verify_payload(event: &Event) -> io::Result<()> {
    let tpe: TransactionPayloadEvent<'_> = event.read_event()?;
    let mut reader = tpe.decompressed()?;
    let n = io::copy(&mut reader, &mut io::sink())?;
    let want = tpe.uncompressed_size();
    if n == 0 || (want != 0 && n != want) {
        return Err(read_err(format!(
            "TRANSACTION_PAYLOAD ({:?}) decompressed to {n} bytes, the event says {want}",
            tpe.algorithm()
        )));
    }
    Ok(())
}

/// The plain rows event a MariaDB compressed rows event (types 166–171) stands for: same header
/// (the type changed to the uncompressed one), post-header and bitmaps, the row data
/// uncompressed. Its checksum, already checked by the stream reader, is not carried over.
pub fn decompress_rows(event: &Event) -> io::Result<Event> {
    let header = event.header();
    let (plain, body) =
        events::mariadb_uncompress_rows(header.event_type_raw(), event.data()).map_err(read_err)?;
    let size = u32::try_from(19 + body.len())
        .map_err(|_| read_err("uncompressed rows event larger than 4 GiB"))?;
    let mut bytes = Vec::with_capacity(19 + body.len());
    bytes.extend(header.timestamp().to_le_bytes());
    bytes.push(plain);
    bytes.extend(header.server_id().to_le_bytes());
    bytes.extend(size.to_le_bytes());
    bytes.extend(header.log_pos().to_le_bytes());
    bytes.extend(header.flags_raw().to_le_bytes());
    bytes.extend_from_slice(&body);
    let mut footer = event.fde().footer();
    footer.set_checksum_enabled(false);
    let fde = event.fde().clone().with_footer(footer);
    Event::read(&fde, bytes.as_slice())
}

#[cfg(test)]
mod tests {
    //! Byte vectors as MySQL 8 / MariaDB 10.11 write them (no checksum: the default FDE of the
    //! reader), framed with the 19-byte v4 header.
    use super::*;
    use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
    use mysql_async::binlog::BinlogVersion;

    use crate::config::RuleConfig;
    use crate::events::tests::mariadb_compress;
    use crate::render::{render, Flavor, TableShape};
    use crate::rules::{Rules, TableKeys};

    fn frame(ty: u8, body: &[u8], log_pos: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(1_700_000_000u32.to_le_bytes()); // timestamp
        v.push(ty);
        v.extend(1u32.to_le_bytes()); // server id
        v.extend(((19 + body.len()) as u32).to_le_bytes());
        v.extend(log_pos.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn read(reader: &mut mysql_common::binlog::EventStreamReader, bytes: &[u8]) -> Event {
        reader.read(bytes).unwrap().unwrap()
    }

    #[test]
    fn mysql_gtid_event_gives_uuid_colon_gno() {
        let mut body = vec![1u8]; // commit flag
        body.extend([
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        body.extend(23u64.to_le_bytes()); // gno
        body.push(2); // logical timestamp typecode
        body.extend(7u64.to_le_bytes()); // last_committed
        body.extend(8u64.to_le_bytes()); // sequence_number
        let mut reader = new_reader();
        let event = read(&mut reader, &frame(33, &body, 500));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::MySqlGtid {
                gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:23".parse().unwrap(),
                tag: String::new()
            }
        );
    }

    #[test]
    fn mysql_previous_gtids_and_xa_prepare_events() {
        // PREVIOUS_GTIDS: n_sids u64, per sid uuid, n_intervals u64, [start, end) u64 pairs.
        let mut body = Vec::new();
        body.extend(1u64.to_le_bytes());
        body.extend([
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        body.extend(2u64.to_le_bytes());
        for v in [1u64, 6, 7, 10] {
            body.extend(v.to_le_bytes());
        }
        let mut reader = new_reader();
        let event = read(&mut reader, &frame(35, &body, 300));
        let Decoded::PreviousGtids(set) = decode(&event).unwrap() else {
            panic!()
        };
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9"
        );
        // XA_PREPARE_LOG (38): one_phase, formatID, gtrid len, bqual len, data.
        let body = [1, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, b'x', b'1', b'b'];
        let event = read(&mut reader, &frame(38, &body, 400));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::XaPrepare {
                xid: Xid {
                    format_id: 1,
                    gtrid: b"x1".to_vec(),
                    bqual: b"b".to_vec()
                },
                one_phase: true
            }
        );
    }

    #[test]
    fn mysql_rows_query_and_mariadb_annotate_give_statement_text() {
        let text = b"UPDATE t SET a=1 /* squeal:invalidate k:1 */";
        let mut body = vec![text.len() as u8]; // ROWS_QUERY: 1-byte length (ignored) + text
        body.extend_from_slice(text);
        let mut reader = new_reader();
        let event = read(&mut reader, &frame(29, &body, 600));
        let Decoded::StatementText(sql) = decode(&event).unwrap() else {
            panic!()
        };
        assert_eq!(events::embedded_keys(&sql), ["k:1"]);
        let event = read(&mut reader, &frame(160, text, 700));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::StatementText(String::from_utf8_lossy(text).into())
        );
    }

    #[test]
    fn mariadb_gtid_and_query_events() {
        let mut reader = new_reader();
        let gtid = [9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let event = read(&mut reader, &frame(162, &gtid, 100));
        let Decoded::MariaGtid(g) = decode(&event).unwrap() else {
            panic!()
        };
        assert_eq!(g.gtid.to_string(), "0-1-9");
        // QUERY: thread id, exec time, schema len, error code, status vars len, status, schema\0, query.
        let mut q = Vec::new();
        q.extend(5u32.to_le_bytes());
        q.extend(0u32.to_le_bytes());
        q.push(4);
        q.extend(0u16.to_le_bytes());
        q.extend(0u16.to_le_bytes());
        q.extend(b"shop\0");
        q.extend(b"TRUNCATE users");
        let event = read(&mut reader, &frame(2, &q, 200));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::Query {
                schema: "shop".into(),
                sql: "TRUNCATE users".into()
            }
        );
    }

    fn table_map(with_names: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(&[42, 0, 0, 0, 0, 0]); // table id
        b.extend(1u16.to_le_bytes()); // flags
        b.push(4);
        b.extend(b"shop\0");
        b.push(5);
        b.extend(b"users\0");
        b.push(3); // columns
        b.extend([3, 15, 8]); // LONG, VARCHAR, LONGLONG
        b.push(2); // metadata length
        b.extend(200u16.to_le_bytes()); // VARCHAR(200): max length, 2 bytes
        b.push(0b010); // nullable: email
        if with_names {
            // optional metadata: SIGNEDNESS (1) for 2 numeric columns: second one unsigned (MSB first)
            b.extend([1, 1, 0b0100_0000]);
            // COLUMN_NAME (4): lenenc strings
            let names: &[&[u8]] = &[b"id", b"email", b"score"];
            let mut field = Vec::new();
            for n in names {
                field.push(n.len() as u8);
                field.extend_from_slice(n);
            }
            b.push(4);
            b.push(field.len() as u8);
            b.extend(field);
        }
        b
    }

    fn write_rows_v2() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(&[42, 0, 0, 0, 0, 0]);
        b.extend(1u16.to_le_bytes()); // flags: STMT_END
        b.extend(2u16.to_le_bytes()); // extra data length (just itself)
        b.push(3); // columns
        b.push(0b111); // all present
                       // row 1: no nulls; id=7, email="a@x", score=u64::MAX
        b.push(0);
        b.extend(7i32.to_le_bytes());
        b.push(3);
        b.extend(b"a@x");
        b.extend(u64::MAX.to_le_bytes());
        // row 2: email NULL; id=-1
        b.push(0b010);
        b.extend((-1i32).to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b
    }

    fn keys_of(with_names: bool, unsigned_from_schema: bool) -> Vec<String> {
        let mut reader = new_reader();
        let tm = read(&mut reader, &frame(19, &table_map(with_names), 300));
        assert_eq!(decode(&tm).unwrap(), Decoded::TableMap);
        let tme: TableMapEvent<'_> = tm.read_event().unwrap();
        let mut shape = TableShape::from_table_map(&tme, Flavor::MySql).unwrap();
        if unsigned_from_schema {
            // A caller that knows the column is unsigned from elsewhere (Source does not: without
            // the names it publishes flush_table).
            shape.columns[2].unsigned = true;
        }
        let names = shape
            .names()
            .unwrap_or_else(|| vec!["id".into(), "email".into(), "score".into()]);
        let keys = bind_users(&["u:{id}", "e:{email}", "s:{score}"], &names);
        let rows = read(&mut reader, &frame(30, &write_rows_v2(), 400));
        assert_eq!(decode(&rows).unwrap(), Decoded::Rows);
        let Some(EventData::RowsEvent(data)) = rows.read_data().unwrap() else {
            panic!()
        };
        assert!(
            matches!(data, RowsEventData::WriteRowsEvent(_)),
            "v2 write rows"
        );
        let tme = reader.get_tme(42).unwrap();
        inserted_keys(&data, tme, &keys, &shape)
    }

    /// `templates` as the rule for `shop.*`, bound to the columns `names` of `shop.users`.
    fn bind_users(templates: &[&str], names: &[String]) -> TableKeys {
        let rules = Rules::compile(&[RuleConfig {
            table: "shop.*".into(),
            keys: templates.iter().map(|t| t.to_string()).collect(),
        }])
        .unwrap();
        rules
            .for_table("shop", "users", crate::rules::NameCase::Exact)
            .unwrap()
            .bind("shop.users", names)
            .unwrap()
    }

    /// The keys of the rows a write-rows event inserted (after images; there are no before images).
    fn inserted_keys(
        data: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
        keys: &TableKeys,
        shape: &TableShape,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for row in data.rows(tme) {
            let (before, after) = row.unwrap();
            assert!(before.is_none());
            let after = after.unwrap();
            keys.render(
                |i| render(after.as_ref(i).expect("every column"), &shape.columns[i]),
                |k| out.push(k),
            )
            .unwrap();
        }
        out
    }

    #[test]
    fn v2_write_rows_with_full_metadata_render_keys() {
        assert_eq!(
            keys_of(true, false),
            ["u:7", "e:a@x", "s:18446744073709551615", "u:-1", "s:5"],
            "names and signedness from the table map; NULL email skips its key"
        );
    }

    #[test]
    fn v2_write_rows_without_metadata_use_given_names() {
        // Without SIGNEDNESS mysql_common reads the unsigned BIGINT as signed (-1); an unsigned
        // flag known from elsewhere restores u64::MAX.
        assert_eq!(keys_of(false, false)[2], "s:-1");
        assert_eq!(
            keys_of(false, true),
            ["u:7", "e:a@x", "s:18446744073709551615", "u:-1", "s:5"]
        );
    }

    /// A v1 WRITE_ROWS body for table 42 with `n` rows (id, email, score), all columns present.
    fn write_rows_v1(n: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(&[42, 0, 0, 0, 0, 0]);
        b.extend(1u16.to_le_bytes()); // flags: STMT_END
        b.push(3); // columns
        b.push(0b111); // all present
        for i in 0..n {
            b.push(0); // no NULLs
            b.extend(i.to_le_bytes());
            let email = format!("user{i}@example.com");
            b.push(email.len() as u8);
            b.extend(email.as_bytes());
            b.extend((i as u64).to_le_bytes());
        }
        b
    }

    fn rendered_keys(
        reader: &mut mysql_common::binlog::EventStreamReader,
        rows: &Event,
    ) -> Vec<String> {
        let tme: TableMapEvent<'_> = reader.get_tme(42).unwrap().clone();
        let shape = TableShape::from_table_map(&tme, Flavor::MariaDb).unwrap();
        let names = shape.names().unwrap();
        let keys = bind_users(&["u:{id}", "e:{email}"], &names);
        let Some(EventData::RowsEvent(data)) = rows.read_data().unwrap() else {
            panic!("not a rows event")
        };
        assert!(matches!(data, RowsEventData::WriteRowsEventV1(_)));
        inserted_keys(&data, &tme, &keys, &shape)
    }

    #[test]
    fn mariadb_compressed_write_rows_decode_like_the_plain_event() {
        let mut reader = new_reader();
        read(&mut reader, &frame(19, &table_map(true), 300));
        let plain = write_rows_v1(40);
        // Row data of 40 rows is over 256 bytes: a two-byte, big-endian length.
        let mut compressed = plain[..10].to_vec(); // post-header, width, bitmap in the clear
        let packed = mariadb_compress(&plain[10..]);
        assert_eq!(packed[0], 0x82);
        compressed.extend(&packed);
        let event = read(&mut reader, &frame(166, &compressed, 900));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::CompressedRows { table_id: 42 }
        );
        let unpacked = decompress_rows(&event).unwrap();
        assert_eq!(unpacked.header().event_type_raw(), 23);
        assert_eq!(unpacked.header().log_pos(), 900);
        assert_eq!(unpacked.data(), plain.as_slice());
        let reference = read(&mut reader, &frame(23, &plain, 900));
        let keys = rendered_keys(&mut reader, &unpacked);
        assert_eq!(keys.len(), 80);
        assert_eq!(keys[..2], ["u:0", "e:user0@example.com"]);
        assert_eq!(keys, rendered_keys(&mut reader, &reference));

        // A length read the wrong way round (little-endian) does not match the data: an error.
        let mut swapped = compressed.clone();
        swapped.swap(11, 12);
        let event = read(&mut reader, &frame(166, &swapped, 900));
        assert!(decompress_rows(&event).is_err());
        // A corrupt zlib stream, an unknown algorithm: errors, never rows guessed.
        let mut corrupt = compressed.clone();
        let last = corrupt.len() - 3;
        corrupt[last] ^= 0xff;
        let event = read(&mut reader, &frame(166, &corrupt, 900));
        assert!(decompress_rows(&event).is_err());
        let mut algorithm = compressed;
        algorithm[10] |= 0x10;
        let event = read(&mut reader, &frame(166, &algorithm, 900));
        assert!(decompress_rows(&event).is_err());
    }

    #[test]
    fn mariadb_compressed_query_gives_the_statement() {
        let sql = "ALTER TABLE p TRUNCATE PARTITION p0 /* padding padding padding */";
        let mut q = Vec::new();
        q.extend(5u32.to_le_bytes());
        q.extend(0u32.to_le_bytes());
        q.push(4);
        q.extend(0u16.to_le_bytes());
        q.extend(2u16.to_le_bytes()); // status vars: 2 bytes
        q.extend([0xff, 0xff]);
        q.extend(b"shop\0");
        q.extend(mariadb_compress(sql.as_bytes()));
        let mut reader = new_reader();
        let event = read(&mut reader, &frame(165, &q, 200));
        assert_eq!(
            decode(&event).unwrap(),
            Decoded::Query {
                schema: "shop".into(),
                sql: sql.into()
            }
        );
        let truncated = &q[..q.len() - 4];
        let event = read(&mut reader, &frame(165, truncated, 200));
        assert!(decode(&event).is_err());
    }

    #[test]
    fn unknown_incident_and_payload_events_are_never_silently_ignored() {
        let mut reader = new_reader();
        // An event type squeal does not know: unsupported, unless flagged ignorable (0x80).
        let mut unknown = frame(172, &[1, 2, 3], 100);
        let event = read(&mut reader, &unknown);
        assert!(matches!(decode(&event).unwrap(), Decoded::Unsupported(_)));
        unknown[17] = 0x80;
        let event = read(&mut reader, &unknown);
        assert_eq!(decode(&event).unwrap(), Decoded::Other);
        // MariaDB's checkpoint and start-encryption events are known and harmless.
        for ty in [161, 164] {
            let event = read(&mut reader, &frame(ty, &[0, 0, 0, 0], 100));
            assert_eq!(decode(&event).unwrap(), Decoded::Other);
        }
        // INCIDENT (26): LOST_EVENTS, empty message.
        let event = read(&mut reader, &frame(26, &[1, 0, 0], 100));
        assert!(matches!(decode(&event).unwrap(), Decoded::Unsupported(_)));

        // TRANSACTION_PAYLOAD (40): fields (type, length, value as lenenc), end mark, payload.
        let payload = |algorithm: &[u8], size: u8, uncompressed: u8, data: &[u8]| {
            let mut b = vec![1, 1, size, 2, algorithm.len() as u8];
            b.extend(algorithm);
            b.extend([3, 1, uncompressed, 0]);
            b.extend(data);
            b
        };
        let inner = frame(2, &[0; 20], 0);
        let none = payload(
            &[0xfc, 0xff, 0],
            inner.len() as u8,
            inner.len() as u8,
            &inner,
        );
        let event = read(&mut reader, &frame(40, &none, 100));
        assert_eq!(decode(&event).unwrap(), Decoded::TransactionPayload);
        // ZSTD (0) with bytes that are not a zstd frame: an error, where mysql_async would
        // yield no inner events at all.
        let garbage = [7u8; 24];
        let zstd = payload(&[0], garbage.len() as u8, 60, &garbage);
        let event = read(&mut reader, &frame(40, &zstd, 100));
        assert!(decode(&event).is_err());
    }

    /// A table map of `shop.users` (table 42): `(type, metadata)` per column, all nullable, then
    /// the optional metadata fields `(type, value)`.
    fn table_map_of(columns: &[(u8, &[u8])], optional: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(&[42, 0, 0, 0, 0, 0]);
        b.extend(1u16.to_le_bytes());
        b.push(4);
        b.extend(b"shop\0");
        b.push(5);
        b.extend(b"users\0");
        b.push(columns.len() as u8);
        b.extend(columns.iter().map(|c| c.0));
        let meta: Vec<u8> = columns.iter().flat_map(|c| c.1.iter().copied()).collect();
        b.push(meta.len() as u8);
        b.extend(meta);
        b.extend(vec![0xFF; columns.len().div_ceil(8)]);
        for (ty, value) in optional {
            b.push(*ty);
            b.push(value.len() as u8);
            b.extend(*value);
        }
        b
    }

    /// A v2 WRITE_ROWS body for table 42 with one row: each column's binlog bytes, or NULL.
    fn write_row_of(row: &[Option<&[u8]>]) -> Vec<u8> {
        let bitmap = |set: &dyn Fn(usize) -> bool| {
            let mut bits = vec![0u8; row.len().div_ceil(8)];
            for i in (0..row.len()).filter(|i| set(*i)) {
                bits[i / 8] |= 1 << (i % 8);
            }
            bits
        };
        let mut b = Vec::new();
        b.extend(&[42, 0, 0, 0, 0, 0]);
        b.extend(1u16.to_le_bytes()); // flags: STMT_END
        b.extend(2u16.to_le_bytes()); // extra data length (just itself)
        b.push(row.len() as u8);
        b.extend(bitmap(&|_| true)); // all present
        b.extend(bitmap(&|i| row[i].is_none())); // NULLs
        for v in row.iter().flatten() {
            b.extend(*v);
        }
        b
    }

    /// The keys `template` gives for `row` of a table shaped by `table_map` as `flavor` reads it.
    fn keys_for_row(
        flavor: Flavor,
        table_map: &[u8],
        names: &[&str],
        template: &str,
        row: &[Option<&[u8]>],
    ) -> Vec<String> {
        let mut reader = new_reader();
        read(&mut reader, &frame(19, table_map, 300));
        let tme = reader.get_tme(42).unwrap().clone();
        let shape = TableShape::from_table_map(&tme, flavor).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let keys = bind_users(&[template], &names);
        let rows = read(&mut reader, &frame(30, &write_row_of(row), 400));
        let Some(EventData::RowsEvent(data)) = rows.read_data().unwrap() else {
            panic!("not a rows event")
        };
        inserted_keys(&data, &tme, &keys, &shape)
    }

    #[test]
    fn text_after_geometry_takes_its_own_charset_in_both_servers_forms() {
        // (id INT, g GEOMETRY, a VARCHAR(10) latin1, b VARCHAR(10) utf8mb4): 'é' in both.
        // MariaDB lists GEOMETRY's charset (binary, 63) among the character columns, MySQL does
        // not; with one charset each, both write COLUMN_CHARSET (3).
        const LONG: u8 = 3;
        const VARCHAR: u8 = 15;
        const GEOMETRY: u8 = 255;
        let (v10, v40) = (10u16.to_le_bytes(), 40u16.to_le_bytes());
        let columns: &[(u8, &[u8])] = &[
            (LONG, &[]),
            (GEOMETRY, &[4]),
            (VARCHAR, &v10),
            (VARCHAR, &v40),
        ];
        let mariadb = table_map_of(columns, &[(3, &[63, 8, 45])]);
        let mysql = table_map_of(columns, &[(3, &[8, 45])]);
        let names = ["id", "g", "a", "b"];
        let point: &[u8] = &[5, 0, 0, 0, 1, 2, 3, 4, 5]; // any GEOMETRY value: 4-byte length, bytes
        for g in [None, Some(point)] {
            let row = [
                Some(&1i32.to_le_bytes()[..]),
                g,
                Some(&[1, 0xE9]),
                Some(&[2, 0xC3, 0xA9]),
            ];
            let keys = |flavor, map: &[u8]| keys_for_row(flavor, map, &names, "k:{a}:{b}", &row);
            assert_eq!(keys(Flavor::MariaDb, &mariadb), ["k:é:é"]);
            assert_eq!(keys(Flavor::MySql, &mysql), ["k:é:é"]);
            // The divergence this guards against: MariaDB's form read as MySQL's.
            assert_eq!(keys(Flavor::MySql, &mariadb), ["k:e9:Ã©"]);
        }

        // (id, g, a, b, c latin1, d utf8mb4): 'é', 'Ä', 'é', 'é'. Mostly latin1, so both write
        // DEFAULT_CHARSET (2): the default, then (index among the character columns, charset).
        let columns: &[(u8, &[u8])] = &[
            (LONG, &[]),
            (GEOMETRY, &[4]),
            (VARCHAR, &v10),
            (VARCHAR, &v10),
            (VARCHAR, &v10),
            (VARCHAR, &v40),
        ];
        let mariadb = table_map_of(columns, &[(2, &[8, 0, 63, 4, 45])]);
        let mysql = table_map_of(columns, &[(2, &[8, 3, 45])]);
        let names = ["id", "g", "a", "b", "c", "d"];
        let row = [
            Some(&1i32.to_le_bytes()[..]),
            None,
            Some(&[1, 0xE9]),
            Some(&[1, 0xC4]),
            Some(&[1, 0xE9]),
            Some(&[2, 0xC3, 0xA9]),
        ];
        let keys =
            |flavor, map: &[u8]| keys_for_row(flavor, map, &names, "k:{a}:{b}:{c}:{d}", &row);
        assert_eq!(keys(Flavor::MariaDb, &mariadb), ["k:é:Ä:é:é"]);
        assert_eq!(keys(Flavor::MySql, &mysql), ["k:é:Ä:é:é"]);
        assert_eq!(keys(Flavor::MySql, &mariadb), ["k:e9:Ä:é:Ã©"]);
    }

    fn new_reader() -> mysql_common::binlog::EventStreamReader {
        mysql_common::binlog::EventStreamReader::new(BinlogVersion::Version4)
    }
}
