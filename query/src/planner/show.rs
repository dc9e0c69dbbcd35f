//! SHOW TABLES and DESCRIBE: statements that read the catalog and nothing else. They are
//! answered from the catalog by whoever holds it (`wwt sql` prints them; a program calls
//! the client's `tables()` and `describe(name)`), not planned against rows.

use sqlparser::ast as sql;

use super::names::object_name;
use crate::error::{Error, Result};

/// A statement that reads the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogQuery {
    /// `SHOW TABLES`: the tables.
    Tables,
    /// `DESCRIBE t` (or `DESC t`): a table's columns and indexes, by the table's name as
    /// wwt names it (lowercased unless quoted).
    Describe(String),
}

/// `stmt` as a [`CatalogQuery`], or `None` if it is not one.
pub fn catalog_query(stmt: &sql::Statement) -> Result<Option<CatalogQuery>> {
    match stmt {
        sql::Statement::ShowTables {
            terse,
            history,
            extended,
            full,
            external,
            show_options,
        } => {
            let o = show_options;
            let plain = !(*terse || *history || *extended || *full || *external)
                && o.show_in.is_none()
                && o.starts_with.is_none()
                && o.limit.is_none()
                && o.limit_from.is_none()
                && o.filter_position.is_none();
            if !plain {
                return Err(Error::unsupported(
                    format!("`{stmt}`"),
                    "write SHOW TABLES alone: it lists every table",
                ));
            }
            Ok(Some(CatalogQuery::Tables))
        }
        sql::Statement::ExplainTable {
            hive_format: None,
            table_name,
            ..
        } => Ok(Some(CatalogQuery::Describe(object_name(table_name)?))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::planner::parse;

    fn query(sql: &str) -> Result<Option<CatalogQuery>> {
        catalog_query(&parse(sql).unwrap()[0])
    }

    #[test]
    fn show_tables_and_describe_are_recognized_with_wwt_names() {
        assert_eq!(query("SHOW TABLES").unwrap(), Some(CatalogQuery::Tables));
        for sql in ["DESCRIBE Notes", "DESC notes", "describe notes;"] {
            assert_eq!(
                query(sql).unwrap(),
                Some(CatalogQuery::Describe("notes".into())),
                "{sql}"
            );
        }
        assert_eq!(
            query("DESCRIBE \"Mixed Case\"").unwrap(),
            Some(CatalogQuery::Describe("Mixed Case".into()))
        );
        assert_eq!(query("SELECT 1").unwrap(), None);
        let err = query("SHOW TABLES LIKE 'a%'").unwrap_err();
        assert!(err.to_string().contains("write SHOW TABLES alone"), "{err}");
        let err = query("DESCRIBE db.notes").unwrap_err();
        assert!(err.to_string().contains("without a schema"), "{err}");
        // Planned as statements (a program's `execute`), they say where the catalog is read.
        let err = crate::planner::plan(&crate::Catalog::new(), &parse("SHOW TABLES").unwrap()[0])
            .unwrap_err();
        assert!(err.to_string().contains("`tables()`"), "{err}");
    }
}
