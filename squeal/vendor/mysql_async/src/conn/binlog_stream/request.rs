use mysql_common::proto::MySerialize;
use mysql_common::packets::{
    binlog_request::BinlogRequest, BinlogDumpFlags, ComRegisterSlave, Sid,
};

/// Binlog stream request builder.
pub struct BinlogStreamRequest<'a> {
    pub(crate) binlog_request: BinlogRequest<'a>,
    pub(crate) register_slave: ComRegisterSlave<'a>,
}

impl<'a> BinlogStreamRequest<'a> {
    /// Creates a new request with the given slave server id.
    pub fn new(server_id: u32) -> Self {
        Self {
            binlog_request: BinlogRequest::new(server_id),
            register_slave: ComRegisterSlave::new(server_id),
        }
    }

    /// Enables GTID-based replication (disabled by default).
    pub fn with_gtid(mut self) -> Self {
        self.binlog_request = self.binlog_request.with_use_gtid(true);
        self
    }

    /// Enables `NON_BLOCK` flag. Stream will be terminated as soon as there are no events.
    pub fn with_non_blocking(mut self) -> Self {
        self.binlog_request = self
            .binlog_request
            .with_flags(BinlogDumpFlags::BINLOG_DUMP_NON_BLOCK);
        self
    }

    /// Sets raw COM_BINLOG_DUMP flags, replacing any set before.
    ///
    /// squeal's vendored addition: MariaDB sends ANNOTATE_ROWS events to a GTID-capable replica only
    /// when it sets `BINLOG_SEND_ANNOTATE_ROWS_EVENT` (0x02, the same bit as MySQL's
    /// `BINLOG_THROUGH_POSITION`), which upstream mysql_async 0.37 offers no way to set.
    pub fn with_flags(mut self, flags: BinlogDumpFlags) -> Self {
        self.binlog_request = self.binlog_request.with_flags(flags);
        self
    }

    /// The COM_BINLOG_DUMP / COM_BINLOG_DUMP_GTID command exactly as it is sent.
    ///
    /// squeal's vendored addition, so that tests can check the bytes of the request.
    pub fn command_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        DumpCommand(&self.binlog_request).serialize(&mut buf);
        buf
    }

    /// Sets the filename of the binlog on the master (try `SHOW BINARY LOGS`).
    pub fn with_filename(mut self, filename: &'a [u8]) -> Self {
        self.binlog_request = self.binlog_request.with_filename(filename);
        self
    }

    /// Sets the start position (defaults to `4`).
    pub fn with_pos(mut self, position: u64) -> Self {
        self.binlog_request = self.binlog_request.with_pos(position);
        self
    }

    /// Adds the given set of GTIDs to the request (ignored if not GTID-based).
    pub fn with_gtid_set<T>(mut self, set: T) -> Self
    where
        T: IntoIterator<Item = Sid<'a>>,
    {
        self.binlog_request = self.binlog_request.with_sids(set);
        self
    }

    /// This hostname will be reported to the server (max len 255, default to an empty string).
    ///
    /// Usually left default.
    pub fn with_hostname(mut self, hostname: &'a [u8]) -> Self {
        self.register_slave = self.register_slave.with_hostname(hostname);
        self
    }

    /// This username will be reported to the server (max len 255, default to an empty string).
    ///
    /// Usually left default.
    pub fn with_user(mut self, user: &'a [u8]) -> Self {
        self.register_slave = self.register_slave.with_user(user);
        self
    }

    /// This password will be reported to the server (max len 255, default to an empty string).
    ///
    /// Usually left default.
    pub fn with_password(mut self, password: &'a [u8]) -> Self {
        self.register_slave = self.register_slave.with_password(password);
        self
    }

    /// This port number will be reported to the server (defaults to `0`).
    ///
    /// Usually left default.
    pub fn with_port(mut self, port: u16) -> Self {
        self.register_slave = self.register_slave.with_port(port);
        self
    }
}

/// The dump command of a [`BinlogRequest`], as squeal's vendored copy sends it.
pub(crate) struct DumpCommand<'r, 'a>(pub(crate) &'r BinlogRequest<'a>);

impl MySerialize for DumpCommand<'_, '_> {
    fn serialize(&self, buf: &mut Vec<u8>) {
        let br = self.0;
        if br.use_gtid() {
            br.as_cmd().serialize(buf);
        } else {
            // squeal's vendored change: mysql_common's `as_cmd` keeps only BINLOG_DUMP_NON_BLOCK
            // for COM_BINLOG_DUMP; MariaDB needs the other bits (0x02 = send ANNOTATE_ROWS).
            mysql_common::packets::ComBinlogDump::new(br.server_id())
                .with_pos(br.pos() as u32)
                .with_filename(br.filename_raw())
                .with_flags(br.flags())
                .serialize(buf);
        }
    }
}
