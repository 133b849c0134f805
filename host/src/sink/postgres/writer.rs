//! The PostgreSQL sink itself (see [`super`] for what it does and its settings).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use postgres::types::{Format, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PostgresDelivery, PostgresSinkSpec};
use crate::sink::{Delivery, Sink, SinkError};
use crate::stream::Event;

/// The most parameters one statement may carry (the protocol's limit).
const MAX_PARAMETERS: usize = 65_535;
/// The first pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How much of a rejected value an error quotes.
const QUOTE_CHARS: usize = 80;

/// Where a column's value comes from.
#[derive(Debug, Clone)]
enum Field {
    Key,
    Timestamp,
    Value,
    Path(Vec<String>),
}

impl Field {
    fn parse(text: &str) -> Field {
        match text {
            "$key" => Field::Key,
            "$timestamp" => Field::Timestamp,
            "$value" => Field::Value,
            path => Field::Path(path.split('.').map(str::to_string).collect()),
        }
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    field: Field,
    ty: Type,
}

/// A row waiting to be written (or written into the open transaction and kept in case
/// the connection is lost): its cells as PostgreSQL text, with what names it in errors.
#[derive(Debug, Clone)]
struct Row {
    /// The row's number among those this sink received in this run (from 1).
    number: u64,
    key: Option<String>,
    cells: Vec<Option<String>>,
    /// The event it came from, kept while refused rows go to a dead-letter output.
    origin: Option<Event>,
}

/// A cell sent in text format: PostgreSQL parses it as the column's type.
#[derive(Debug)]
struct Text<'a>(Option<&'a str>);

impl ToSql for Text<'_> {
    fn to_sql(&self, _: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.to_sql(ty, out)
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }
}

/// Why a statement failed.
enum Failure {
    /// The connection is gone: reconnect and try again.
    Connection(postgres::Error),
    /// The server refused it.
    Refused(postgres::Error),
}

fn classify(client: &Client, error: postgres::Error) -> Failure {
    let connection_class = error.code().is_some_and(|c| {
        let code = c.code();
        code.starts_with("08") || code.starts_with("57P")
    });
    if client.is_closed() || error.is_closed() || error.as_db_error().is_none() || connection_class {
        Failure::Connection(error)
    } else {
        Failure::Refused(error)
    }
}

/// The open transaction (with checkpoints).
#[derive(Debug, Default)]
struct Transaction {
    open: bool,
    /// Rows written into it, to write again if the connection is lost.
    written: Vec<Row>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
struct SinkState {
    /// Prepared transactions not known to be committed, oldest first.
    prepared: Vec<Prepared>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prepared {
    checkpoint: u64,
    gid: String,
}

pub struct PostgresSink {
    uid: String,
    spec: PostgresSinkSpec,
    config: postgres::Config,
    client: Client,
    /// A second connection for `COMMIT PREPARED`, opened when first needed.
    control: Option<Client>,
    columns: Vec<Column>,
    /// Whether a column reads the event's JSON value (parsed once per row then).
    reads_value: bool,
    /// Indexes into `columns` of the primary key (upserts).
    key_columns: Vec<usize>,
    /// `INSERT INTO t (a, b) VALUES ` and what follows the values.
    insert_head: String,
    insert_tail: String,
    rows_per_statement: usize,
    /// The full-size statement, prepared on the current connection.
    full_statement: Option<Statement>,
    /// Rows received and not yet sent.
    buffer: Vec<Row>,
    received: u64,
    /// `None` without checkpoints (every batch commits on its own).
    transaction: Option<Transaction>,
    delivery: PostgresDelivery,
    prepared: Vec<Prepared>,
    gid_prefix: String,
    /// Refused rows go to the job's `dlq` output rather than failing it.
    dead_letters: bool,
    rejected: Vec<(Event, String)>,
}

impl PostgresSink {
    /// Connects (retrying for `reconnect_timeout_ms`), checks the table and its
    /// columns, and settles what an earlier run left prepared: a restore commits what
    /// its checkpoint lists and rolls back the rest of this sink's.
    pub fn open(spec: &PostgresSinkSpec, job: &str, delivery: Delivery<'_>) -> Result<Self, SinkError> {
        let error = |message: String| SinkError { uid: spec.uid.clone(), message };
        spec.validate().map_err(&error)?;
        let mut config: postgres::Config = spec.connection.parse().map_err(|e| error(format!("bad `connection`: {e}")))?;
        if let Some(password) = password(spec).map_err(&error)? {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name(&format!("weir {job}/{}", spec.uid));
        }
        let timeout = Duration::from_millis(spec.reconnect_timeout_ms);
        let mut client = connect(&config, timeout).map_err(|e| error(e))?;

        let table = quote_name(&spec.table);
        let names: Vec<String> = spec.columns.keys().cloned().collect();
        let quoted: Vec<String> = names.iter().map(|n| quote_identifier(n)).collect();
        let insert_head = format!("INSERT INTO {table} ({}) VALUES ", quoted.join(", "));
        let insert_tail = if spec.primary_key.is_empty() {
            String::new()
        } else {
            let key: Vec<String> = spec.primary_key.iter().map(|k| quote_identifier(k)).collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !spec.primary_key.contains(n))
                .map(|n| format!("{0} = EXCLUDED.{0}", quote_identifier(n)))
                .collect();
            if updates.is_empty() {
                format!(" ON CONFLICT ({}) DO NOTHING", key.join(", "))
            } else {
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", key.join(", "), updates.join(", "))
            }
        };
        // Preparing one row's statement checks the table, the columns and the conflict
        // target, and tells the columns' types.
        let probe = format!("{insert_head}{}{insert_tail}", placeholders(0, names.len()));
        let statement = client.prepare(&probe).map_err(|e| {
            error(format!("cannot write to table {}: {}", spec.table, describe(&e)))
        })?;
        let columns: Vec<Column> = spec
            .columns
            .iter()
            .zip(statement.params())
            .map(|((name, field), ty)| Column { name: name.clone(), field: Field::parse(field), ty: ty.clone() })
            .collect();
        let key_columns = spec.primary_key.iter().map(|k| names.iter().position(|n| n == k).expect("validated")).collect();

        let checkpointed = !matches!(delivery, Delivery::Direct { .. });
        let exactly_once = checkpointed && spec.delivery == PostgresDelivery::ExactlyOnce;
        let gid_prefix = format!("weir:{job}:{}:", spec.uid);
        let mut prepared = Vec::new();
        if exactly_once {
            let allowed: String = client
                .query_one("SHOW max_prepared_transactions", &[])
                .map(|row| row.get(0))
                .map_err(|e| error(format!("cannot read max_prepared_transactions: {}", describe(&e))))?;
            if allowed.trim() == "0" {
                return Err(error(
                    "the server has max_prepared_transactions = 0, and delivery = \"exactly-once\" prepares \
                     a transaction per checkpoint: set max_prepared_transactions (2 or more) in \
                     postgresql.conf and restart the server, or use delivery = \"at-least-once\" \
                     (exactly once in effect for upserts)"
                        .into(),
                ));
            }
            let state: SinkState = match delivery {
                Delivery::Restore(state) if !state.is_null() => serde_json::from_value(state.clone())
                    .map_err(|e| error(format!("unreadable checkpoint state: {e}")))?,
                _ => SinkState::default(),
            };
            prepared = recover(&mut client, &gid_prefix, &state).map_err(|e| error(e))?;
        }
        Ok(PostgresSink {
            uid: spec.uid.clone(),
            spec: spec.clone(),
            config,
            client,
            control: None,
            key_columns,
            insert_head,
            insert_tail,
            rows_per_statement: spec.batch_rows.min(MAX_PARAMETERS / columns.len()).max(1),
            reads_value: columns.iter().any(|c| matches!(c.field, Field::Value | Field::Path(_))),
            columns,
            full_statement: None,
            buffer: Vec::new(),
            received: 0,
            transaction: checkpointed.then(Transaction::default),
            delivery: if exactly_once { PostgresDelivery::ExactlyOnce } else { PostgresDelivery::AtLeastOnce },
            prepared,
            gid_prefix,
            dead_letters: false,
            rejected: Vec::new(),
        })
    }

    fn error(&self, message: String) -> SinkError {
        SinkError { uid: self.uid.clone(), message }
    }

    /// Turns an event into a row, or says which column it does not fit.
    fn row(&self, event: &Event, number: u64) -> Result<Row, String> {
        let key = event.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned());
        let value: Value = if self.reads_value {
            serde_json::from_slice(&event.value).map_err(|e| {
                format!("row {number}{}: the value is not JSON ({e}): {}", key_note(&key), quote(&event.value))
            })?
        } else {
            Value::Null
        };
        let mut cells = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let cell = match &column.field {
                Field::Key => key.clone(),
                Field::Timestamp => event.timestamp.map(|ms| timestamp_text(ms, &column.ty)),
                Field::Value => Some(value.to_string()),
                Field::Path(path) => {
                    let found = path.iter().try_fold(&value, |v, part| v.get(part));
                    match found {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(cell_text(v, &column.ty)),
                    }
                }
            };
            if let Some(text) = &cell {
                check_fits(text, &column.ty).map_err(|why| {
                    format!(
                        "row {number}{}: column `{}` ({}) cannot take {}: {why}",
                        key_note(&key),
                        column.name,
                        column.ty,
                        quote(text.as_bytes())
                    )
                })?;
            }
            cells.push(cell);
        }
        let origin = self.dead_letters.then(|| event.clone());
        Ok(Row { number, key, cells, origin })
    }

    /// Sends the buffered rows (in the open transaction, if there is one).
    fn send_buffer(&mut self) -> Result<(), SinkError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let refused = self.send(&rows)?;
        if let Some(transaction) = &mut self.transaction {
            transaction.written.extend(rows.into_iter().filter(|r| !refused.contains(&r.number)));
        }
        Ok(())
    }

    /// Writes `rows`, reconnecting if the connection is lost. Returns the numbers of
    /// the rows refused and sent to the dead-letter output.
    fn send(&mut self, rows: &[Row]) -> Result<Vec<u64>, SinkError> {
        let deadline = Instant::now() + Duration::from_millis(self.spec.reconnect_timeout_ms);
        loop {
            match self.try_send(rows) {
                Ok(()) => return Ok(Vec::new()),
                Err(Failure::Connection(e)) => {
                    self.reconnect(deadline, &e)?;
                    self.replay()?;
                }
                Err(Failure::Refused(e)) => {
                    // The refused statement aborted the open transaction: start it
                    // again with what it held, then find the refused rows.
                    if self.transaction.as_ref().is_some_and(|t| t.open) {
                        if let Err(lost) = self.client.batch_execute("ROLLBACK") {
                            if let Failure::Connection(lost) = classify(&self.client, lost) {
                                self.reconnect(deadline, &lost)?;
                            }
                        }
                        self.replay()?;
                    }
                    return self.rejection(rows, e);
                }
            }
        }
    }

    fn try_send(&mut self, rows: &[Row]) -> Result<(), Failure> {
        if let Some(transaction) = &mut self.transaction {
            if !transaction.open {
                self.client.batch_execute("BEGIN").map_err(|e| classify(&self.client, e))?;
                transaction.open = true;
            }
        }
        for chunk in rows.chunks(self.rows_per_statement) {
            let chunk = self.last_of_each_key(chunk);
            self.insert(&chunk, false)?;
        }
        Ok(())
    }

    /// One `INSERT` of `rows`, under a savepoint when `savepoint` (row by row, to find
    /// a refused row). A refused batch without one aborts the open transaction, which
    /// [`PostgresSink::send`] then writes again: refusals are rare, and a savepoint
    /// around every statement would cost two more round trips each.
    fn insert(&mut self, rows: &[&Row], savepoint: bool) -> Result<(), Failure> {
        if savepoint {
            self.client.batch_execute("SAVEPOINT weir_batch").map_err(|e| classify(&self.client, e))?;
        }
        let cells: Vec<Text<'_>> = rows.iter().flat_map(|r| r.cells.iter().map(|c| Text(c.as_deref()))).collect();
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let result = if rows.len() == self.rows_per_statement {
            let statement = match &self.full_statement {
                Some(statement) => statement.clone(),
                None => {
                    let sql = self.statement_text(rows.len());
                    let statement = self.client.prepare(&sql).map_err(|e| classify(&self.client, e))?;
                    self.full_statement = Some(statement.clone());
                    statement
                }
            };
            self.client.execute(&statement, &params)
        } else {
            let sql = self.statement_text(rows.len());
            self.client.execute(sql.as_str(), &params)
        };
        match result {
            Ok(_) if savepoint => {
                self.client.batch_execute("RELEASE SAVEPOINT weir_batch").map_err(|e| classify(&self.client, e))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = classify(&self.client, e);
                if savepoint && matches!(failure, Failure::Refused(_)) {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT weir_batch")
                        .map_err(|e| classify(&self.client, e))?;
                }
                Err(failure)
            }
        }
    }

    fn statement_text(&self, rows: usize) -> String {
        let width = self.columns.len();
        let values: Vec<String> = (0..rows).map(|r| placeholders(r * width, width)).collect();
        format!("{}{}{}", self.insert_head, values.join(", "), self.insert_tail)
    }

    /// An upsert's rows with only the last of each key (one statement may not update a
    /// row twice; the last row is what writing them one by one leaves).
    fn last_of_each_key<'r>(&self, rows: &'r [Row]) -> Vec<&'r Row> {
        if self.key_columns.is_empty() {
            return rows.iter().collect();
        }
        let key = |row: &Row| self.key_columns.iter().map(|&i| row.cells[i].clone()).collect::<Vec<_>>();
        let last: HashMap<Vec<Option<String>>, usize> = rows.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
        rows.iter().enumerate().filter(|(i, r)| last[&key(r)] == *i).map(|(_, r)| r).collect()
    }

    /// The server refused a batch: writes the rows one at a time, each under a
    /// savepoint (in a transaction of its own when the sink has none open), to find
    /// the rows it refuses. Without a dead-letter output the first one fails the job
    /// (and the transaction of its own is rolled back); with one, every refused row
    /// goes there, the others are written, and their numbers are returned.
    fn rejection(&mut self, rows: &[Row], batch_error: postgres::Error) -> Result<Vec<u64>, SinkError> {
        let batch_refused =
            |e: &postgres::Error| format!("the server refused a batch of {} rows: {}", rows.len(), describe(e));
        let own_transaction = !self.transaction.as_ref().is_some_and(|t| t.open);
        if own_transaction {
            self.client
                .batch_execute("BEGIN")
                .map_err(|e| self.error(format!("{} (then: {})", batch_refused(&batch_error), describe(&e))))?;
        }
        let mut refused = Vec::new();
        let mut failure = None;
        for row in rows {
            match self.insert(&[row], true) {
                Ok(()) => {}
                Err(Failure::Refused(e)) => {
                    let reason = self.describe_row_error(row, &e);
                    match row.origin.clone() {
                        Some(origin) => {
                            tracing::debug!(uid = %self.uid, %reason, "row refused; dead-lettered");
                            self.rejected.push((origin, reason));
                            refused.push(row.number);
                        }
                        None => {
                            failure = Some(reason);
                            break;
                        }
                    }
                }
                Err(Failure::Connection(e)) => {
                    failure = Some(format!("lost the connection: {}", describe(&e)));
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            if own_transaction {
                let _ = self.client.batch_execute("ROLLBACK");
            }
            return Err(self.error(reason));
        }
        if refused.is_empty() {
            return Err(self.error(batch_refused(&batch_error)));
        }
        if own_transaction {
            self.client.batch_execute("COMMIT").map_err(|e| self.error(format!("COMMIT: {}", describe(&e))))?;
        }
        Ok(refused)
    }

    fn describe_row_error(&self, row: &Row, error: &postgres::Error) -> String {
        let column = error
            .as_db_error()
            .and_then(|db| db.column())
            .map(|c| format!(", column `{c}`"))
            .unwrap_or_default();
        format!(
            "row {}{}{column}: table {} refused it: {}",
            row.number,
            key_note(&row.key),
            self.spec.table,
            describe(error)
        )
    }

    /// Reconnects with back-off until `deadline`. The open transaction, if any, is
    /// gone with the old connection: [`PostgresSink::replay`] opens it again.
    fn reconnect(&mut self, deadline: Instant, lost: &postgres::Error) -> Result<(), SinkError> {
        tracing::warn!(uid = %self.uid, error = %describe(lost), "lost the connection to PostgreSQL; reconnecting");
        let left = deadline.saturating_duration_since(Instant::now());
        self.client = connect(&self.config, left).map_err(|e| self.error(e))?;
        self.full_statement = None;
        tracing::info!(uid = %self.uid, "reconnected to PostgreSQL");
        Ok(())
    }

    /// After a reconnect: opens the transaction the old connection had open and
    /// writes what it held again.
    fn replay(&mut self) -> Result<(), SinkError> {
        let Some(transaction) = self.transaction.as_mut().filter(|t| t.open) else { return Ok(()) };
        transaction.open = false;
        let written = std::mem::take(&mut transaction.written);
        let result = self.send(&written);
        if let Some(transaction) = &mut self.transaction {
            transaction.written = written;
        }
        result.map(drop)
    }

    /// Ends the open transaction with `sql`, reconnecting if the connection is lost.
    /// After a reconnect, `done` says whether the lost attempt took effect after all;
    /// if not, the transaction is written again and `sql` runs again.
    fn end_with(
        &mut self,
        sql: &str,
        mut done: impl FnMut(&mut Client) -> Result<bool, postgres::Error>,
    ) -> Result<(), SinkError> {
        let deadline = Instant::now() + Duration::from_millis(self.spec.reconnect_timeout_ms);
        loop {
            let error = match self.client.batch_execute(sql) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let lost = match classify(&self.client, error) {
                Failure::Refused(e) => return Err(self.error(format!("{sql}: {}", describe(&e)))),
                Failure::Connection(e) => e,
            };
            self.reconnect(deadline, &lost)?;
            let took_effect = done(&mut self.client)
                .map_err(|e| self.error(format!("after reconnecting, checking `{sql}`: {}", describe(&e))))?;
            if took_effect {
                return Ok(());
            }
            self.replay()?;
        }
    }

    /// Ends the open transaction with `PREPARE TRANSACTION` (exactly once) or `COMMIT`.
    fn end_transaction(&mut self, checkpoint: u64) -> Result<(), SinkError> {
        self.send_buffer()?;
        let Some(transaction) = &self.transaction else { return Ok(()) };
        if !transaction.open {
            return Ok(());
        }
        if self.delivery == PostgresDelivery::ExactlyOnce && checkpoint != u64::MAX {
            let gid = format!("{}{checkpoint}", self.gid_prefix);
            let sql = format!("PREPARE TRANSACTION {}", quote_literal(&gid));
            let probe = gid.clone();
            self.end_with(&sql, |client| is_prepared(client, &probe))?;
            self.prepared.push(Prepared { checkpoint, gid });
        } else {
            // A lost COMMIT is ambiguous; the reconnect writes the rows again (at least once).
            self.end_with("COMMIT", |_| Ok(false))?;
        }
        let transaction = self.transaction.as_mut().expect("checked");
        transaction.open = false;
        transaction.written.clear();
        Ok(())
    }

    /// `COMMIT PREPARED` for the prepared transactions of checkpoints up to `up_to`,
    /// on the control connection (the sink's own has the next transaction open, and
    /// the command cannot run inside one).
    fn commit_prepared(&mut self, up_to: u64) -> Result<(), SinkError> {
        let deadline = Instant::now() + Duration::from_millis(self.spec.reconnect_timeout_ms);
        let mut retried = false;
        while let Some(prepared) = self.prepared.first().filter(|p| p.checkpoint <= up_to) {
            let sql = format!("COMMIT PREPARED {}", quote_literal(&prepared.gid));
            let control = match &mut self.control {
                Some(client) if !client.is_closed() => client,
                _ => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.control.insert(connect(&self.config, left).map_err(|e| self.error(e))?)
                }
            };
            match control.batch_execute(&sql) {
                Ok(()) => {
                    self.prepared.remove(0);
                    retried = false;
                }
                Err(e) => match classify(control, e) {
                    // A lost attempt that committed after all: no longer prepared.
                    Failure::Refused(e) if retried && e.code() == Some(&postgres::error::SqlState::UNDEFINED_OBJECT) => {
                        self.prepared.remove(0);
                        retried = false;
                    }
                    Failure::Refused(e) => return Err(self.error(format!("{sql}: {}", describe(&e)))),
                    Failure::Connection(e) => {
                        tracing::warn!(uid = %self.uid, error = %describe(&e), "lost the control connection; reconnecting");
                        self.control = None;
                        retried = true;
                    }
                },
            }
        }
        Ok(())
    }
}

impl Sink for PostgresSink {
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        self.received += 1;
        let row = match self.row(event, self.received) {
            Ok(row) => row,
            Err(reason) if self.dead_letters => {
                self.rejected.push((event.clone(), reason));
                return Ok(());
            }
            Err(reason) => return Err(self.error(reason)),
        };
        self.buffer.push(row);
        if self.buffer.len() >= self.rows_per_statement {
            self.send_buffer()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.send_buffer()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<serde_json::Value, SinkError> {
        self.end_transaction(checkpoint)?;
        if self.delivery == PostgresDelivery::AtLeastOnce {
            return Ok(Value::Null);
        }
        let state = SinkState { prepared: self.prepared.clone() };
        Ok(serde_json::to_value(state).expect("serializable"))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), SinkError> {
        self.commit_prepared(checkpoint)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.end_transaction(u64::MAX)?;
        self.commit_prepared(u64::MAX)
    }

    fn abort(&mut self) {
        if self.transaction.as_ref().is_some_and(|t| t.open) {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }

    fn reject_to_dead_letters(&mut self) -> bool {
        self.dead_letters = true;
        true
    }

    fn take_rejected(&mut self) -> Vec<(Event, String)> {
        std::mem::take(&mut self.rejected)
    }
}

/// The password from the environment or a file, if the spec names one.
fn password(spec: &PostgresSinkSpec) -> Result<Option<String>, String> {
    if let Some(name) = &spec.password_env {
        return std::env::var(name)
            .map(Some)
            .map_err(|_| format!("the environment variable {name} (password_env) is not set"));
    }
    if let Some(path) = &spec.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {} (password_file): {e}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(None)
}

/// Connects, retrying with back-off for `timeout` while the server is unreachable
/// (not when it refuses the login).
fn connect(config: &postgres::Config, timeout: Duration) -> Result<Client, String> {
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    let target = describe_target(config);
    loop {
        match config.connect(NoTls) {
            Ok(client) => return Ok(client),
            Err(e) if e.as_db_error().is_some() && !e.code().is_some_and(|c| c.code().starts_with("57P")) => {
                return Err(format!("PostgreSQL at {target} refused the connection: {}", describe(&e)));
            }
            Err(e) => {
                if Instant::now() + backoff > deadline {
                    return Err(format!(
                        "cannot reach PostgreSQL at {target} (gave up after {} ms): {}",
                        timeout.as_millis(),
                        describe(&e)
                    ));
                }
                tracing::debug!(%target, error = %describe(&e), "PostgreSQL unreachable; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Host, port and database, for messages (never the password).
fn describe_target(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default database)"))
}

/// Commits the prepared transactions `state` lists, rolls back this sink's others
/// (from checkpoints that never completed, or a run this one does not continue), and
/// returns none pending.
fn recover(client: &mut Client, prefix: &str, state: &SinkState) -> Result<Vec<Prepared>, String> {
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1)",
            &[&prefix],
        )
        .map_err(|e| format!("cannot list prepared transactions: {}", describe(&e)))?;
    for row in rows {
        let gid: String = row.get(0);
        let keep = state.prepared.iter().any(|p| p.gid == gid);
        let sql = if keep { "COMMIT PREPARED" } else { "ROLLBACK PREPARED" };
        client
            .batch_execute(&format!("{sql} {}", quote_literal(&gid)))
            .map_err(|e| format!("{sql} {gid}: {}", describe(&e)))?;
        tracing::info!(gid, committed = keep, "settled a prepared transaction of an earlier run");
    }
    Ok(Vec::new())
}

fn is_prepared(client: &mut Client, gid: &str) -> Result<bool, postgres::Error> {
    Ok(client.query_opt("SELECT 1 FROM pg_prepared_xacts WHERE gid = $1", &[&gid])?.is_some())
}

/// A server error with its detail and hint, or a client error.
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => match error.source() {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

fn placeholders(first: usize, count: usize) -> String {
    let list: Vec<String> = (1..=count).map(|i| format!("${}", first + i)).collect();
    format!("({})", list.join(", "))
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, each part quoted.
fn quote_name(name: &str) -> String {
    name.split('.').map(quote_identifier).collect::<Vec<_>>().join(".")
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn key_note(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(" (key {k:?})")).unwrap_or_default()
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A JSON value as the text PostgreSQL parses for a column of type `ty`.
fn cell_text(value: &Value, ty: &Type) -> String {
    if *ty == Type::JSON || *ty == Type::JSONB {
        return value.to_string();
    }
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) if is_timestamp(ty) => match number.as_i64() {
            Some(ms) => timestamp_text(ms, ty),
            None => number.to_string(),
        },
        other => other.to_string(),
    }
}

fn is_timestamp(ty: &Type) -> bool {
    *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP || *ty == Type::DATE
}

/// Milliseconds since the epoch as a timestamp's text (UTC); as a number for columns
/// of other types.
fn timestamp_text(ms: i64, ty: &Type) -> String {
    if !is_timestamp(ty) {
        return ms.to_string();
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{milli:03}+00")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Checks that `text` parses as `ty` where weir can tell (numbers and booleans), so
/// the error names the column; the server checks everything else.
fn check_fits(text: &str, ty: &Type) -> Result<(), String> {
    let integer = |bits: u32| {
        let ok = match bits {
            16 => text.trim().parse::<i16>().is_ok(),
            32 => text.trim().parse::<i32>().is_ok(),
            _ => text.trim().parse::<i64>().is_ok(),
        };
        if ok { Ok(()) } else { Err(format!("not a {bits}-bit integer")) }
    };
    match *ty {
        Type::INT2 => integer(16),
        Type::INT4 => integer(32),
        Type::INT8 => integer(64),
        Type::FLOAT4 | Type::FLOAT8 => {
            let t = text.trim();
            let special = ["nan", "infinity", "-infinity", "inf", "-inf"].contains(&t.to_ascii_lowercase().as_str());
            if special || t.parse::<f64>().is_ok() { Ok(()) } else { Err("not a number".into()) }
        }
        Type::NUMERIC => {
            let t = text.trim();
            let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
            let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
                Some((m, e)) => (m, Some(e)),
                None => (digits, None),
            };
            let mantissa_ok = !mantissa.is_empty()
                && mantissa.chars().filter(|c| *c == '.').count() <= 1
                && mantissa.chars().any(|c| c.is_ascii_digit())
                && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.');
            let exponent_ok = exponent.is_none_or(|e| e.trim_start_matches(['-', '+']).parse::<u32>().is_ok());
            if (mantissa_ok && exponent_ok) || t.eq_ignore_ascii_case("nan") { Ok(()) } else { Err("not a number".into()) }
        }
        Type::BOOL => {
            let t = text.trim().to_ascii_lowercase();
            let ok = ["t", "true", "y", "yes", "on", "1", "f", "false", "n", "no", "off", "0"].contains(&t.as_str());
            if ok { Ok(()) } else { Err("not a boolean".into()) }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_the_text_of_their_column_type() {
        assert_eq!(cell_text(&serde_json::json!("a\"b"), &Type::TEXT), "a\"b");
        assert_eq!(cell_text(&serde_json::json!("a"), &Type::JSONB), "\"a\"");
        assert_eq!(cell_text(&serde_json::json!({"x": [1]}), &Type::TEXT), "{\"x\":[1]}");
        assert_eq!(cell_text(&serde_json::json!(12.5), &Type::NUMERIC), "12.5");
        assert_eq!(cell_text(&serde_json::json!(true), &Type::BOOL), "true");
        assert_eq!(cell_text(&serde_json::json!(0), &Type::TIMESTAMPTZ), "1970-01-01 00:00:00.000+00");
        assert_eq!(timestamp_text(1_700_000_000_123, &Type::TIMESTAMPTZ), "2023-11-14 22:13:20.123+00");
        assert_eq!(timestamp_text(-1, &Type::TIMESTAMP), "1969-12-31 23:59:59.999+00");
        assert_eq!(timestamp_text(951_782_400_000, &Type::DATE), "2000-02-29 00:00:00.000+00");
        assert_eq!(timestamp_text(42, &Type::INT8), "42");
    }

    #[test]
    fn values_that_cannot_fit_their_column_are_named() {
        assert!(check_fits("42", &Type::INT4).is_ok());
        assert_eq!(check_fits("4.5", &Type::INT4).unwrap_err(), "not a 32-bit integer");
        assert!(check_fits("70000", &Type::INT2).is_err());
        assert!(check_fits("1e3", &Type::NUMERIC).is_ok());
        assert!(check_fits("-0.25", &Type::NUMERIC).is_ok());
        assert!(check_fits("twelve", &Type::NUMERIC).is_err());
        assert!(check_fits(".", &Type::NUMERIC).is_err());
        assert!(check_fits("NaN", &Type::FLOAT8).is_ok());
        assert!(check_fits("maybe", &Type::BOOL).is_err());
        assert!(check_fits("anything", &Type::TEXT).is_ok());
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote_name("shop.orders"), "\"shop\".\"orders\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
