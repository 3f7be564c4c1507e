//! The little the store's queries need from a database, so each query is written once for
//! SQLite and PostgreSQL: statements with `$1`-style parameters, values of four types, rows
//! read back as cells. Everything that differs between the two is in `dialect`.

use super::StoreError;

/// A parameter of a statement.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Bool(bool),
}

/// One column of a row read back, whatever the engine called its type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// One row read back.
#[derive(Debug)]
pub(super) struct Cells(pub(super) Vec<Cell>);

impl Cells {
    fn cell(&self, column: usize) -> Result<&Cell, StoreError> {
        self.0.get(column).ok_or(StoreError::Decode {
            column,
            expected: "a column",
        })
    }

    fn mismatch<T>(column: usize, expected: &'static str) -> Result<T, StoreError> {
        Err(StoreError::Decode { column, expected })
    }

    pub(super) fn int(&self, column: usize) -> Result<i64, StoreError> {
        match self.cell(column)? {
            Cell::Int(value) => Ok(*value),
            _ => Self::mismatch(column, "an integer"),
        }
    }

    pub(super) fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            _ => self.int(column).map(Some),
        }
    }

    /// A count or index that the schema keeps small (`u32` in the API).
    pub(super) fn small(&self, column: usize) -> Result<u32, StoreError> {
        u32::try_from(self.int(column)?).or_else(|_| Self::mismatch(column, "a u32"))
    }

    pub(super) fn text(&self, column: usize) -> Result<String, StoreError> {
        match self.cell(column)? {
            Cell::Text(value) => Ok(value.clone()),
            _ => Self::mismatch(column, "text"),
        }
    }

    pub(super) fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            _ => self.text(column).map(Some),
        }
    }

    /// A flag: PostgreSQL's BOOLEAN, or SQLite's 0/1 integer.
    pub(super) fn flag(&self, column: usize) -> Result<bool, StoreError> {
        match self.cell(column)? {
            Cell::Bool(value) => Ok(*value),
            Cell::Int(0) => Ok(false),
            Cell::Int(1) => Ok(true),
            _ => Self::mismatch(column, "a boolean"),
        }
    }
}

/// An open transaction on either engine. Statements use `$1`, `$2`, ... for parameters.
pub(super) trait Tx {
    /// Runs a statement; answers how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError>;

    /// Runs a query (or a statement with `RETURNING`); answers its rows.
    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Cells>, StoreError>;

    /// The first row of `query`, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<Cells>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row `query` must answer (an `INSERT ... RETURNING`, an aggregate).
    fn query_one(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Cells, StoreError> {
        self.query_opt(sql, params)?.ok_or(StoreError::Decode {
            column: 0,
            expected: "one row",
        })
    }
}
