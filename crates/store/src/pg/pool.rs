//! Pooled connections that keep the statements they prepared.
//!
//! A search is the same SQL text for every value (values are bound), so a connection
//! prepares each text once and reuses it: PostgreSQL then stops planning a statement anew
//! at every execution (planning was most of a search's time). Units of work run on the
//! same connections, with the same cache, in group transactions (`super::group`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement};

use crate::sql::Arg;
use crate::Result;

/// Statements a connection keeps; past this it forgets them all and starts again.
const MAX_STATEMENTS: usize = 512;

/// Statements prepared on one connection, by SQL text.
pub type Statements = HashMap<String, Statement>;

/// A database connection and the statements it prepared, by SQL text.
pub struct Connection {
    client: Client,
    statements: Statements,
    /// When it last went back to the pool.
    returned: Instant,
    /// Found dead: the pool drops it instead of taking it back.
    broken: bool,
}

/// A connection that rested in the pool longer than this is tested before use: the server
/// may have closed it meanwhile (a restart, a failover, an idle timeout). Busy connections
/// go straight to work (testing each one at every checkout was a third of a booking's
/// round trips).
const TEST_AFTER_REST: Duration = Duration::from_secs(5);

/// The statement for `sql` on the transaction's connection, prepared on first use: a
/// statement prepared once is executed in one round trip and not planned again (a text
/// statement costs two round trips and a plan every time).
pub fn prepared_in(client: &mut impl GenericClient, statements: &mut Statements, sql: &str) -> Result<Statement> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    if statements.len() >= MAX_STATEMENTS {
        statements.clear();
    }
    let statement = client.prepare(sql)?;
    statements.insert(sql.to_string(), statement.clone());
    Ok(statement)
}

impl Connection {
    /// The client and the statements it prepared, to run a transaction that uses them.
    pub fn parts(&mut self) -> (&mut Client, &mut Statements) {
        (&mut self.client, &mut self.statements)
    }

    /// The statement for `sql`, prepared on first use.
    pub fn prepared(&mut self, sql: &str) -> Result<Statement> {
        prepared_in(&mut self.client, &mut self.statements, sql)
    }

    /// Whether the connection can be used: not closed, and — if it rested in the pool a
    /// while — answering. A dead one is marked so that the pool drops it.
    pub fn usable(&mut self) -> bool {
        let alive = !self.client.is_closed()
            && (self.returned.elapsed() < TEST_AFTER_REST || self.client.simple_query("").is_ok());
        self.broken = !alive;
        alive
    }
}

impl std::ops::Deref for Connection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Opens and checks connections for the r2d2 pool.
pub struct Manager {
    /// Where and how to connect.
    pub config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Connection, postgres::Error> {
        Ok(Connection {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
            returned: Instant::now(),
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        // Called as the connection goes back to the pool.
        conn.returned = Instant::now();
        conn.broken || conn.client.is_closed()
    }
}

/// Something that runs a statement with bound values: a pooled connection or a transaction.
pub trait Runner {
    /// The rows of `sql` (placeholders `$1…`) with `args` bound.
    fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>>;
}

impl Runner for Connection {
    fn rows(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let statement = self.prepared(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        Ok(self.client.query(&statement, &params)?)
    }
}
