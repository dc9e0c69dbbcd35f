//! Planning of the schema statements: CREATE TABLE, DROP TABLE and CREATE INDEX.

use sqlparser::ast as sql;

use super::names::{at, column_type, ident, object_name};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::schema::{Catalog, Column, IndexDef, IndexKind, TableSchema};
use crate::value::ColumnType;

pub(super) fn create_table(ct: &sql::CreateTable) -> Result<TableSchema> {
    if ct.query.is_some() || ct.like.is_some() || ct.clone.is_some() {
        return Err(Error::unsupported(
            "CREATE TABLE … AS / LIKE / CLONE",
            "declare the columns, then INSERT the rows",
        ));
    }
    if ct.or_replace || ct.if_not_exists || ct.temporary {
        return Err(Error::unsupported(
            "OR REPLACE, IF NOT EXISTS and TEMPORARY",
            "write a plain CREATE TABLE",
        ));
    }
    let name = object_name(&ct.name)?;
    let mut columns: Vec<Column> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for c in &ct.columns {
        let cname = ident(&c.name);
        if columns.iter().any(|x| x.name == cname) {
            return Err(Error::Constraint(format!(
                "column `{cname}` is declared twice{}",
                at(&c.name)
            )));
        }
        let mut not_null = false;
        for o in &c.options {
            match &o.option {
                sql::ColumnOption::NotNull => not_null = true,
                sql::ColumnOption::Null => {}
                sql::ColumnOption::PrimaryKey(_) => keys.push(cname.clone()),
                other => {
                    return Err(Error::unsupported(
                        format!("the column option `{other}` on `{cname}`"),
                        "columns take only PRIMARY KEY, NOT NULL and NULL",
                    ));
                }
            }
        }
        columns.push(Column {
            name: cname,
            ty: column_type(&c.data_type)?,
            not_null,
        });
    }
    for k in &ct.constraints {
        match k {
            sql::TableConstraint::PrimaryKey(pk) => {
                for ic in &pk.columns {
                    match &ic.column.expr {
                        sql::Expr::Identifier(i) => keys.push(ident(i)),
                        e => {
                            return Err(Error::unsupported(
                                format!("the key expression `{e}`"),
                                "name one column in PRIMARY KEY (…)",
                            ));
                        }
                    }
                }
            }
            other => {
                return Err(Error::unsupported(
                    format!("the table constraint `{other}`"),
                    "only PRIMARY KEY is supported",
                ));
            }
        }
    }
    let [key] = keys.as_slice() else {
        return Err(Error::Constraint(format!(
            "table `{name}` needs exactly one PRIMARY KEY column (it has {}); composite keys are not supported",
            keys.len()
        )));
    };
    let primary_key =
        columns
            .iter()
            .position(|c| &c.name == key)
            .ok_or_else(|| Error::UnknownColumn {
                message: format!("PRIMARY KEY names `{key}`, which is not a column of `{name}`"),
            })?;
    let pk = &mut columns[primary_key];
    pk.not_null = true;
    if matches!(pk.ty, ColumnType::Double | ColumnType::Bool) {
        return Err(Error::TypeMismatch(format!(
            "the primary key `{}` cannot be {}; use BIGINT, TEXT, TIMESTAMP or BLOB",
            pk.name, pk.ty
        )));
    }
    Ok(TableSchema {
        name,
        columns,
        primary_key,
        indexes: Vec::new(),
    })
}

pub(super) fn drop_table(
    catalog: &Catalog,
    if_exists: bool,
    names: &[sql::ObjectName],
) -> Result<Plan> {
    let [name] = names else {
        return Err(Error::unsupported(
            "dropping several tables in one statement",
            "write one DROP TABLE per table",
        ));
    };
    let name = object_name(name)?;
    match catalog.table(&name) {
        Ok(_) => Ok(Plan::DropTable { table: Some(name) }),
        Err(_) if if_exists => Ok(Plan::DropTable { table: None }),
        Err(e) => Err(e),
    }
}

pub(super) fn create_index(catalog: &Catalog, ci: &sql::CreateIndex) -> Result<Plan> {
    let table = object_name(&ci.table_name)?;
    let schema = catalog.table(&table)?;
    if ci.unique || ci.predicate.is_some() || !ci.include.is_empty() {
        return Err(Error::unsupported(
            "UNIQUE, partial and covering indexes",
            "write CREATE INDEX [name] ON table USING fulltext|hash|btree (column)",
        ));
    }
    let kind = match &ci.using {
        Some(sql::IndexType::Hash) => IndexKind::Hash,
        Some(sql::IndexType::BTree) => IndexKind::BTree,
        Some(sql::IndexType::Custom(i)) if i.value.eq_ignore_ascii_case("fulltext") => {
            IndexKind::FullText
        }
        other => {
            return Err(Error::unsupported(
                match other {
                    Some(t) => format!("the index kind `{t}`"),
                    None => "an index without a kind".into(),
                },
                "say USING fulltext (MATCH), USING hash (=, IN) or USING btree (ranges, ORDER BY)",
            ));
        }
    };
    let column = match ci.columns.as_slice() {
        [c] => match &c.column.expr {
            sql::Expr::Identifier(i) => ident(i),
            e => {
                return Err(Error::unsupported(
                    format!("an index on the expression `{e}`"),
                    "index one column",
                ));
            }
        },
        _ => {
            return Err(Error::unsupported(
                "an index on several columns",
                "create one index per column",
            ));
        }
    };
    let col = schema.column(&column)?;
    if kind == IndexKind::FullText && col.ty != ColumnType::Text {
        return Err(Error::TypeMismatch(format!(
            "a fulltext index needs a TEXT column; `{column}` is {}",
            col.ty
        )));
    }
    if col.ty == ColumnType::Blob && kind == IndexKind::BTree {
        return Err(Error::TypeMismatch(format!(
            "a btree index orders values; `{column}` is a BLOB, index it USING hash"
        )));
    }
    let name = match &ci.name {
        Some(n) => object_name(n)?,
        None => format!("{table}_{column}_{kind}"),
    };
    let index = IndexDef { name, column, kind };
    // Check the name and kind are free now, so the plan can be applied as is.
    catalog.clone().add_index(&table, index.clone())?;
    Ok(Plan::CreateIndex { table, index })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::plan::Plan;
    use crate::planner::testing::catalog;
    use crate::planner::{parse, plan};
    use crate::schema::{Catalog, IndexKind};

    #[test]
    fn create_table_and_index() {
        let c = catalog();
        let docs = c.table("docs").unwrap();
        assert_eq!(docs.primary_key, 0);
        assert!(docs.columns[3].not_null);
        assert!(docs.has_index("body", IndexKind::FullText));
        assert_eq!(docs.indexes[2].name, "by_year");
        assert_eq!(docs.indexes[0].name, "docs_body_fulltext");
        // The schema's SQL plans back to the same schema.
        let mut again = Catalog::new();
        for text in docs.to_sql() {
            match plan(&again, &parse(&text).unwrap()[0]).unwrap() {
                Plan::CreateTable(t) => again.add_table(t).unwrap(),
                Plan::CreateIndex { table, index } => again.add_index(&table, index).unwrap(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(again.table("docs").unwrap(), docs);
    }

    #[test]
    fn bad_ddl_is_refused_with_reasons() {
        let c = Catalog::new();
        let err = |sql: &str| plan(&c, &parse(sql).unwrap()[0]).unwrap_err().to_string();
        assert!(err("CREATE TABLE t (a INT)").contains("exactly one PRIMARY KEY"));
        assert!(err("CREATE TABLE t (a DOUBLE PRIMARY KEY)").contains("cannot be DOUBLE"));
        assert!(err("CREATE TABLE t (a INT PRIMARY KEY, b JSON)").contains("column type JSON"));
        assert!(err("CREATE TABLE t (a INT PRIMARY KEY, a INT)").contains("declared twice"));
        let c = catalog();
        let err = |sql: &str| plan(&c, &parse(sql).unwrap()[0]).unwrap_err().to_string();
        assert!(err("CREATE INDEX ON docs USING gin (body)").contains("index kind"));
        assert!(err("CREATE INDEX ON docs USING fulltext (year)").contains("TEXT column"));
        assert!(err("CREATE INDEX x2 ON docs USING hash (author)").contains("already has"));
        assert!(
            err("CREATE INDEX ON nope USING hash (a)").contains("known tables are authors, docs")
        );
        assert!(err("DROP VIEW docs").contains("not supported"));
        assert!(err("DROP TABLE docs, authors").contains("one DROP TABLE per table"));
        assert!(err("DROP TABLE nope").contains("known tables are authors, docs"));
        assert_eq!(
            plan(&c, &parse("DROP TABLE IF EXISTS nope").unwrap()[0]).unwrap(),
            Plan::DropTable { table: None }
        );
    }
}
