//! Where reading is, in every form a checkpoint needs: the transaction boundary (file and
//! position), the MariaDB GTID state and the MySQL GTID set at it, and the prepared XA
//! transactions whose held keys keep the checkpoint back.
//!
//! Pure bookkeeping, no I/O: [`crate::source::Source`] calls it as events pass, so MySQL's GTID
//! and XA forms are tested here on decoded byte vectors without a MySQL server.

use std::collections::BTreeMap;

use invalidation::Gtid;

use crate::checkpoint::{FileCreated, Position};
use crate::events::Xid;
use crate::gtid_set::{GtidSet, GtidSetError};
use crate::txn::TxnBuffer;

/// A prepared XA transaction whose keys wait for its XA COMMIT (or are dropped at XA ROLLBACK).
struct HeldXa {
    /// The XA transaction id, as XA COMMIT / XA ROLLBACK name it.
    xid: Xid,
    /// Where its PREPARE group starts: the checkpoint stays here until it is resolved, so a
    /// restart reads the PREPARE again and holds the keys again (nothing else is persisted).
    start: Position,
    /// Its deduplicated keys.
    buffer: TxnBuffer,
}

/// Reading progress; see the module docs.
pub struct Progress {
    /// The end of the last transaction handed to the publisher: where reading resumes after a
    /// reconnect, and (unless an XA transaction is held) what the checkpoint may say.
    pub boundary: Position,
    /// GTID of the group being read.
    gtid: Option<Gtid>,
    /// MySQL 8.4 tag of that GTID (empty when untagged).
    gtid_tag: String,
    /// MariaDB: latest GTID per domain at the boundary.
    gtid_state: BTreeMap<u32, Gtid>,
    /// MySQL: GTIDs executed up to the boundary.
    gtid_set: GtidSet,
    /// Prepared XA transactions with keys, oldest first.
    held: Vec<HeldXa>,
    /// A binlog file read (or the checkpoint's) and who created it when: positions in that file
    /// carry it ([`Position::file_created`]), and [`Progress::same_file`] refuses the same name
    /// created anew.
    file_created: Option<(String, FileCreated)>,
}

impl Progress {
    /// Progress at `start` (a checkpoint, or the configured start), with its GTID state/set.
    pub fn new(start: Position) -> Result<Progress, GtidSetError> {
        let gtid_set = match start.gtid_set.as_deref() {
            Some(text) => text.parse()?,
            None => GtidSet::new(),
        };
        Ok(Progress {
            gtid_state: parse_gtid_state(start.gtid_state.as_deref()),
            gtid_set,
            file_created: start.file_created.map(|c| (start.file.clone(), c)),
            boundary: start,
            gtid: None,
            gtid_tag: String::new(),
            held: Vec::new(),
        })
    }

    /// GTID of the group being read, if it had one.
    pub fn gtid(&self) -> Option<Gtid> {
        self.gtid
    }

    /// A MySQL GTID event starts a group.
    pub fn mysql_gtid(&mut self, gtid: Gtid, tag: String) {
        self.gtid = Some(gtid);
        self.gtid_tag = tag;
    }

    /// A MariaDB GTID event starts a group.
    pub fn mariadb_gtid(&mut self, gtid: Gtid) {
        self.gtid = Some(gtid);
        self.gtid_tag.clear();
    }

    /// MySQL PREVIOUS_GTIDS: everything executed before this binlog file, which squeal has passed
    /// (or was told to skip by `start_from`).
    pub fn previous_gtids(&mut self, set: &GtidSet) {
        self.gtid_set.union(set);
    }

    /// MariaDB GTID_LIST: the state before this binlog file.
    pub fn gtid_list(&mut self, list: impl IntoIterator<Item = Gtid>) {
        for gtid in list {
            merge_gtid(&mut self.gtid_state, gtid);
        }
    }

    /// Forgets the group being read (a reconnect reads it again).
    pub fn abandon_group(&mut self) {
        self.gtid = None;
        self.gtid_tag.clear();
    }

    fn position(&self, file: String, pos: u64, gtid: Option<String>) -> Position {
        let file_created = match &self.file_created {
            Some((f, t)) if *f == file => Some(*t),
            _ => None,
        };
        Position {
            file,
            pos,
            gtid,
            gtid_state: render_gtid_state(&self.gtid_state),
            gtid_set: (!self.gtid_set.is_empty()).then(|| self.gtid_set.to_string()),
            file_created,
        }
    }

    /// The server says binlog `file` was created by `created` (from its FORMAT_DESCRIPTION
    /// event; a timestamp of 0 is unknown). `Err(what squeal knew)` if a file of that name was
    /// read before, or checkpointed, with another date: the binlogs were reset (RESET MASTER, a
    /// restored server). With `other_server_ok` (resuming by GTID, which may move to another
    /// server of the topology) a file of that name written by another server is not refused: it
    /// is another file, and the server found squeal's place in it by GTID, not by position.
    pub fn same_file(
        &mut self,
        file: &str,
        created: FileCreated,
        other_server_ok: bool,
    ) -> Result<(), FileCreated> {
        if created.at == 0 {
            return Ok(());
        }
        if let Some((known, was)) = &self.file_created {
            let other_server = was.server_id != created.server_id;
            if known == file && *was != created && !(other_server && other_server_ok) {
                return Err(*was);
            }
        }
        self.file_created = Some((file.to_owned(), created));
        Ok(())
    }

    /// The group being read ends at `file`:`pos`: its GTID joins the state/set. Returns the
    /// position after it; [`Progress::advance`] makes it the boundary once it is handed over.
    pub fn end_group(&mut self, file: String, pos: u64) -> Position {
        if let Some(g) = self.gtid {
            merge_gtid(&mut self.gtid_state, g);
            if let Gtid::MySql { uuid, gno } = g {
                self.gtid_set.insert(uuid, &self.gtid_tag, gno);
            }
        }
        self.position(file, pos, self.gtid.map(|g| g.to_string()))
    }

    /// A rotation between groups: the position at the start of the new file.
    pub fn rotation(&self, file: String, pos: u64) -> Position {
        self.position(file, pos, self.boundary.gtid.clone())
    }

    /// `position` was handed to the publisher: it is the new boundary.
    pub fn advance(&mut self, position: Position) {
        self.boundary = position;
        self.abandon_group();
    }

    /// Where the checkpoint may go when reading has reached `position`: there, unless a prepared
    /// XA transaction still holds keys; then at the start of the oldest one's PREPARE.
    pub fn checkpoint_for(&self, position: &Position) -> Position {
        self.held
            .first()
            .map_or_else(|| position.clone(), |h| h.start.clone())
    }

    /// Holds a prepared XA transaction's keys; call before [`Progress::end_group`] of its
    /// PREPARE group, so that it holds the checkpoint at the start of that group.
    pub fn hold(&mut self, xid: Xid, buffer: TxnBuffer) {
        match self.held.iter_mut().find(|h| h.xid == xid) {
            Some(h) => h.buffer = buffer, // its PREPARE read again after a reconnect
            None => self.held.push(HeldXa {
                xid,
                start: self.boundary.clone(),
                buffer,
            }),
        }
    }

    /// Takes the held keys of `xid` (at its XA COMMIT, or to drop them at XA ROLLBACK).
    pub fn release(&mut self, xid: &Xid) -> Option<TxnBuffer> {
        let i = self.held.iter().position(|h| &h.xid == xid)?;
        Some(self.held.remove(i).buffer)
    }

    /// Number of prepared XA transactions holding keys.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// MariaDB GTID state text: `domain-server-seq` per domain, comma-separated.
fn parse_gtid_state(text: Option<&str>) -> BTreeMap<u32, Gtid> {
    let mut state = BTreeMap::new();
    for part in text.unwrap_or_default().split(',') {
        if let Ok(g) = part.trim().parse::<Gtid>() {
            merge_gtid(&mut state, g);
        }
    }
    state
}

/// Records `gtid` as its domain's latest (MariaDB GTIDs only; MySQL's are not a per-domain state).
fn merge_gtid(state: &mut BTreeMap<u32, Gtid>, gtid: Gtid) {
    if let Gtid::MariaDb { domain, seq, .. } = gtid {
        match state.get(&domain) {
            Some(Gtid::MariaDb { seq: have, .. }) if *have >= seq => {}
            _ => {
                state.insert(domain, gtid);
            }
        }
    }
}

fn render_gtid_state(state: &BTreeMap<u32, Gtid>) -> Option<String> {
    (!state.is_empty()).then(|| {
        state
            .values()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Only digits, '-' and ',': safe to place in `SET @slave_connect_state='...'`.
pub fn valid_gtid_state(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Decoded};
    use invalidation::{Operation, TableRef};
    use mysql_async::binlog::BinlogVersion;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    #[test]
    fn gtid_state_keeps_the_latest_per_domain_and_round_trips() {
        let mut state = parse_gtid_state(Some("0-1-10,1-2-5"));
        merge_gtid(&mut state, "0-1-9".parse().unwrap());
        merge_gtid(&mut state, "0-3-11".parse().unwrap());
        merge_gtid(&mut state, "2-1-1".parse().unwrap());
        merge_gtid(
            &mut state,
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:23".parse().unwrap(),
        );
        assert_eq!(render_gtid_state(&state).unwrap(), "0-3-11,1-2-5,2-1-1");
        assert_eq!(render_gtid_state(&BTreeMap::new()), None);
        assert!(valid_gtid_state("0-1-10,1-2-5"));
        assert!(!valid_gtid_state("0-1-1'; DROP TABLE x; --"));
        assert!(!valid_gtid_state(""));
    }

    /// One event framed with the v4 header, decoded by squeal's classifier.
    fn decode(ty: u8, body: &[u8]) -> Decoded {
        let mut v = Vec::new();
        v.extend(1_700_000_000u32.to_le_bytes());
        v.push(ty);
        v.extend(1u32.to_le_bytes());
        v.extend(((19 + body.len()) as u32).to_le_bytes());
        v.extend(100u32.to_le_bytes());
        v.extend(0u16.to_le_bytes());
        v.extend_from_slice(body);
        let mut reader = mysql_common::binlog::EventStreamReader::new(BinlogVersion::Version4);
        let event = reader.read(&v[..]).unwrap().unwrap();
        wire::decode(&event).unwrap()
    }

    /// A MySQL GTID_EVENT (33) body for `A:gno`.
    fn gtid_event(gno: u64) -> Decoded {
        let mut body = vec![1u8];
        body.extend(crate::gtid_set::parse_uuid(A).unwrap());
        body.extend(gno.to_le_bytes());
        body.push(2);
        body.extend(0u64.to_le_bytes());
        body.extend(0u64.to_le_bytes());
        decode(33, &body)
    }

    /// Feeds a decoded MySQL GTID event as `Source` does.
    fn feed(p: &mut Progress, d: Decoded) {
        match d {
            Decoded::MySqlGtid { gtid, tag } => p.mysql_gtid(gtid, tag),
            Decoded::PreviousGtids(set) => p.previous_gtids(&set),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn start(gtid_set: Option<&str>) -> Position {
        Position {
            gtid_set: gtid_set.map(str::to_owned),
            ..Position::at("binlog.000001", 4)
        }
    }

    /// A file's creator and date ride in the checkpoint of every position in that file, and a file
    /// of the same name created anew (RESET MASTER) is refused, whether the first date came from
    /// this run or from the checkpoint it resumed from; one written by another server is refused
    /// too, unless squeal resumes by GTID (a failover to a replica that names its files alike).
    #[test]
    fn a_file_of_a_known_name_created_anew_is_refused() {
        let primary = |at| FileCreated { server_id: 1, at };
        let replica = |at| FileCreated { server_id: 100, at };
        let mut p = Progress::new(Position {
            file_created: Some(primary(100)),
            ..Position::at("binlog.000007", 900)
        })
        .unwrap();
        let (by_position, by_gtid) = (false, true);
        assert_eq!(
            p.same_file("binlog.000007", primary(0), by_position),
            Ok(()),
            "0: unknown"
        );
        assert_eq!(
            p.same_file("binlog.000007", primary(250), by_gtid),
            Err(primary(100))
        );
        assert_eq!(
            p.same_file("binlog.000007", replica(100), by_position),
            Err(primary(100))
        );
        assert_eq!(
            p.same_file("binlog.000007", primary(100), by_position),
            Ok(())
        );
        let end = p.end_group("binlog.000007".into(), 1200);
        assert_eq!(end.file_created, Some(primary(100)));
        assert_eq!(p.rotation("binlog.000008".into(), 4).file_created, None);
        assert_eq!(
            p.same_file("binlog.000008", primary(300), by_position),
            Ok(()),
            "a new file"
        );
        let next = p.end_group("binlog.000008".into(), 500);
        assert_eq!(next.file_created, Some(primary(300)));
        assert_eq!(
            p.same_file("binlog.000008", primary(301), by_position),
            Err(primary(300))
        );
        // Failover by GTID: the replica's file of the same name is taken, and is the one known now.
        assert_eq!(p.same_file("binlog.000008", replica(280), by_gtid), Ok(()));
        assert_eq!(
            p.end_group("binlog.000008".into(), 700).file_created,
            Some(replica(280))
        );
        // Old checkpoints have no date: nothing to compare, the first date seen is kept.
        let mut old = Progress::new(Position::at("binlog.000007", 900)).unwrap();
        assert_eq!(
            old.same_file("binlog.000007", primary(250), by_position),
            Ok(())
        );
        assert_eq!(
            old.same_file("binlog.000007", primary(251), by_position),
            Err(primary(250))
        );
    }

    #[test]
    fn mysql_gtid_set_grows_with_previous_gtids_and_each_commit() {
        // First start without a set (start_from = "earliest"): the file's PREVIOUS_GTIDS seeds it.
        let mut p = Progress::new(start(None)).unwrap();
        let mut prev = Vec::new();
        prev.extend(1u64.to_le_bytes());
        prev.extend(crate::gtid_set::parse_uuid(A).unwrap());
        prev.extend(1u64.to_le_bytes());
        prev.extend(1u64.to_le_bytes());
        prev.extend(6u64.to_le_bytes());
        feed(&mut p, decode(35, &prev));
        feed(&mut p, gtid_event(6));
        let p1 = p.end_group("binlog.000001".into(), 500);
        assert_eq!(p1.gtid.as_deref(), Some(&*format!("{A}:6")));
        assert_eq!(p1.gtid_set.as_deref(), Some(&*format!("{A}:1-6")));
        assert_eq!(p1.gtid_state, None, "no MariaDB state on MySQL");
        p.advance(p1.clone());
        // MySQL 8.4 tagged GTID: another transaction than the untagged A:1.
        p.mysql_gtid(
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1".parse().unwrap(),
            "alpha".into(),
        );
        let p2 = p.end_group("binlog.000001".into(), 600);
        assert_eq!(p2.gtid_set.as_deref(), Some(&*format!("{A}:1-6:alpha:1")));
        p.advance(p2.clone());
        // A group without a GTID (a rotation) keeps the set; a restart reads it back.
        let r = p.rotation("binlog.000002".into(), 4);
        assert_eq!(r.gtid_set, p2.gtid_set);
        let again = Progress::new(p2.clone()).unwrap();
        assert_eq!(again.gtid_set.to_string(), format!("{A}:1-6:alpha:1"));
        assert!(Progress::new(start(Some("not a set"))).is_err());
    }

    #[test]
    fn a_prepared_xa_transaction_holds_the_checkpoint_with_the_set_before_its_prepare() {
        let xid = Xid {
            format_id: 1,
            gtrid: b"x1".to_vec(),
            bqual: Vec::new(),
        };
        let mut p = Progress::new(start(Some(&format!("{A}:1-10")))).unwrap();
        let p0 = p.boundary.clone();
        // PREPARE group A:11: its keys are held.
        feed(&mut p, gtid_event(11));
        let mut keys = TxnBuffer::new(100, None);
        keys.add_key(
            Some(&TableRef::new("shop", "users")),
            Operation::Insert,
            "user:8".into(),
        )
        .unwrap();
        p.hold(xid.clone(), keys);
        let p1 = p.end_group("binlog.000001".into(), 1000);
        assert_eq!(p1.gtid_set.as_deref(), Some(&*format!("{A}:1-11")));
        assert_eq!(
            p.checkpoint_for(&p1),
            p0,
            "the checkpoint stays before the PREPARE, and its set lacks A:11, so a GTID resume \
             gets the PREPARE again"
        );
        p.advance(p1);
        // Later transactions do not move the checkpoint either.
        feed(&mut p, gtid_event(12));
        let p2 = p.end_group("binlog.000001".into(), 2000);
        assert_eq!(p.checkpoint_for(&p2), p0);
        p.advance(p2);
        // The PREPARE read again after a reconnect: still held from the first start.
        let mut again = TxnBuffer::new(100, None);
        again
            .add_key(
                Some(&TableRef::new("shop", "users")),
                Operation::Insert,
                "user:8".into(),
            )
            .unwrap();
        p.hold(xid.clone(), again);
        assert_eq!(p.held(), 1);
        // XA COMMIT (A:13): the keys come back and the checkpoint catches up.
        feed(&mut p, gtid_event(13));
        let released = p.release(&xid).expect("held keys");
        let p3 = p.end_group("binlog.000001".into(), 3000);
        assert_eq!(p.checkpoint_for(&p3), p3);
        assert_eq!(p3.gtid_set.as_deref(), Some(&*format!("{A}:1-13")));
        assert_eq!(released.len(), 1, "the keys once, not twice");
        assert!(p.release(&xid).is_none(), "released once");
        assert_eq!(p.held(), 0);
    }
}
