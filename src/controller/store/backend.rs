//! The seam under the controller's store: tables of rows, read whole and
//! written in transactions. [`super::Db`] keeps the controller's records
//! in it; a backend only stores bytes: redb in one local file (the
//! default) or etcd shared by several controllers.

/// The tables of the controller's state. Row keys are strings; an event's
/// key is its sequence number, zero-padded so that keys sort as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Small singletons: commits, suspended, torn down.
    State,
    /// The applied state, one row per `SECTION/KEY`.
    Applied,
    Nodes,
    Assignments,
    Events,
    /// Named API tokens (their hashes).
    Tokens,
    /// Auto scaled services' counts and decisions.
    Scaling,
    /// Node credentials (their hashes).
    Credentials,
    /// The operator's secrets, sealed: only ciphertext.
    Secrets,
    /// Tasks started outside any service.
    Runs,
    /// Scheduled tasks' state between fires.
    Schedules,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::State,
        Table::Applied,
        Table::Nodes,
        Table::Assignments,
        Table::Events,
        Table::Tokens,
        Table::Scaling,
        Table::Credentials,
        Table::Secrets,
        Table::Runs,
        Table::Schedules,
    ];

    /// The table's name: redb's table name, etcd's key segment.
    pub fn name(self) -> &'static str {
        match self {
            Table::State => "state",
            Table::Applied => "applied",
            Table::Nodes => "nodes",
            Table::Assignments => "assignments",
            Table::Events => "events",
            Table::Tokens => "tokens",
            Table::Scaling => "scaling",
            Table::Credentials => "credentials",
            Table::Secrets => "secrets",
            Table::Runs => "runs",
            Table::Schedules => "schedules",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// An event's row key.
pub fn event_key(seq: u64) -> String {
    format!("{seq:020}")
}

/// One change of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
    /// Delete every row of the table whose key sorts before this one.
    DeleteBelow(Table, String),
}

/// A row: its table, key and value.
pub type Row = (Table, String, Vec<u8>);

/// Why a backend failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// This controller may not write: it does not hold the leadership it
    /// was elected with (fencing).
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("{0}")]
    Failed(String),
}

/// Where the controller's rows are kept.
pub trait Backend: Send + Sync {
    /// Where, for errors and logs: a path, or etcd's endpoints and prefix.
    fn describe(&self) -> String;
    /// Every row of every table, read at one point in time.
    fn read_all(&self) -> Result<Vec<Row>, BackendError>;
    /// The rows of one table, by key.
    fn read_table(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, BackendError>;
    fn read(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, BackendError>;
    /// Apply the changes in order, all or none.
    fn commit(&self, ops: Vec<Op>) -> Result<(), BackendError>;
}

/// A shared backend (the controller's election holds the etcd one too).
impl<T: Backend> Backend for std::sync::Arc<T> {
    fn describe(&self) -> String {
        self.as_ref().describe()
    }
    fn read_all(&self) -> Result<Vec<Row>, BackendError> {
        self.as_ref().read_all()
    }
    fn read_table(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        self.as_ref().read_table(table)
    }
    fn read(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        self.as_ref().read(table, key)
    }
    fn commit(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.as_ref().commit(ops)
    }
}
