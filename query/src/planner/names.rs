//! Names and type names read from the AST: identifiers (lowercased unless quoted), the
//! position of an identifier for error messages, unqualified object names, and SQL column
//! types.

use sqlparser::ast as sql;

use crate::error::{Error, Result};
use crate::value::ColumnType;

/// An identifier as wwt names it: lowercased unless quoted.
pub(super) fn ident(i: &sql::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

pub(super) fn at(i: &sql::Ident) -> String {
    let s = i.span.start;
    if s.line == 0 {
        String::new()
    } else {
        format!(" (line {}, column {})", s.line, s.column)
    }
}

pub(super) fn object_name(n: &sql::ObjectName) -> Result<String> {
    match n.0.as_slice() {
        [sql::ObjectNamePart::Identifier(i)] => Ok(ident(i)),
        _ => Err(Error::unsupported(
            format!("the qualified name `{n}`"),
            "name tables without a schema or database prefix",
        )),
    }
}

pub(super) fn column_type(dt: &sql::DataType) -> Result<ColumnType> {
    use sql::DataType as D;
    Ok(match dt {
        D::Int(_)
        | D::Integer(_)
        | D::BigInt(_)
        | D::SmallInt(_)
        | D::TinyInt(_)
        | D::Int8(_)
        | D::Int64 => ColumnType::Int,
        D::Double(_) | D::DoublePrecision | D::Float(_) | D::Float64 | D::Real => {
            ColumnType::Double
        }
        D::Text | D::Varchar(_) | D::CharacterVarying(_) | D::Char(_) | D::String(_) => {
            ColumnType::Text
        }
        D::Bool | D::Boolean => ColumnType::Bool,
        D::Timestamp(_, _) | D::Datetime(_) => ColumnType::Timestamp,
        D::Blob(_) | D::Bytea | D::Binary(_) | D::Varbinary(_) => ColumnType::Blob,
        other => {
            return Err(Error::unsupported(
                format!("the column type {other}"),
                "use INT, BIGINT, DOUBLE, TEXT, BOOL, TIMESTAMP or BLOB",
            ));
        }
    })
}
