//! Key rules: which tables are ruled (`db.table` globs) and the key templates rendered for their rows.
//!
//! A template is literal text with `{column}` placeholders (`user:{id}`, `user:email:{email}`);
//! `{{` and `}}` stand for literal braces. Column names match case-insensitively, as MySQL's do.
//! Templates are compiled once per table layout ([`Rules::for_table`] then [`TableKeys::bind`]) so
//! that the per-row work is only value rendering. This module does no I/O.

use std::collections::BTreeSet;

use globset::{Glob, GlobBuilder, GlobMatcher};

use crate::config::RuleConfig;

/// A rules error: a bad glob or template.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The table pattern is not a valid glob or not `db.table` shaped.
    #[error("rule table {pattern:?}: {reason}")]
    BadTable {
        /// The pattern as written.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// The key template does not parse.
    #[error("rule key template {template:?}: {reason}")]
    BadTemplate {
        /// The template as written.
        template: String,
        /// What is wrong.
        reason: String,
    },
}

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text, copied into the key.
    Literal(String),
    /// A placeholder: the column name, lower-cased.
    Column(String),
}

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The template as written in the config (for messages).
    pub text: String,
    /// Its pieces in order.
    pub segments: Vec<Segment>,
}

impl Template {
    /// Parses `user:{id}` style text.
    pub fn parse(text: &str) -> Result<Template, RuleError> {
        let bad = |reason: &str| RuleError::BadTemplate {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') | None => return Err(bad("unclosed `{`")),
                            Some(ch) => name.push(ch),
                        }
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(bad("empty placeholder `{}`"));
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Column(name.to_lowercase()));
                }
                '}' => return Err(bad("unmatched `}` (write `}}` for a literal brace)")),
                c if c.is_whitespace() || c.is_control() => {
                    return Err(bad(
                        "whitespace or control characters are not allowed in cache keys",
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        if !segments.iter().any(|s| matches!(s, Segment::Column(_))) {
            return Err(bad("a template needs at least one `{column}` placeholder"));
        }
        Ok(Template {
            text: text.to_owned(),
            segments,
        })
    }

    /// Column names this template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Column(c) => Some(c.as_str()),
            Segment::Literal(_) => None,
        })
    }
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    matcher: GlobMatcher,
    /// The same glob ignoring case (see [`NameCase::Folded`]).
    matcher_folded: GlobMatcher,
    templates: Vec<Template>,
}

impl Rule {
    /// Whether the glob matches `name` (`db.table`), compared as `case` says.
    fn matches(&self, name: &str, case: NameCase) -> bool {
        match case {
            NameCase::Exact => self.matcher.is_match(name),
            NameCase::Folded => self.matcher_folded.is_match(name),
        }
    }
}

/// How a table or database name taken from statement text compares with the rules' globs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameCase {
    /// Exactly: the server runs with `lower_case_table_names = 0` and names are case-sensitive.
    #[default]
    Exact,
    /// Ignoring case: with `lower_case_table_names` 1 or 2 the server compares names lowercased,
    /// so a statement may spell a ruled table `Shop.Users` and still change `shop.users`.
    Folded,
}

impl NameCase {
    /// The comparison a server with this `lower_case_table_names` makes.
    pub fn of_server(lower_case_table_names: u64) -> NameCase {
        if lower_case_table_names == 0 {
            NameCase::Exact
        } else {
            NameCase::Folded
        }
    }
}

/// All configured rules, compiled.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// The templates that apply to one table (the union of every matching rule, without repeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    /// Templates in rule order.
    pub templates: Vec<Template>,
}

/// Templates bound to column positions of one table layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKeys {
    /// Per template: literal pieces and column indexes.
    pub templates: Vec<Vec<BoundSegment>>,
}

/// A segment bound to a column index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundSegment {
    /// Literal text.
    Literal(String),
    /// Index of the column in the row image.
    Column(usize),
}

/// A template names a column the table does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?} uses column `{column}` which table {table} does not have")]
pub struct MissingColumn {
    /// The template text.
    pub template: String,
    /// The missing column.
    pub column: String,
    /// `db.table`.
    pub table: String,
}

impl Rules {
    /// Compiles rule configs; globs use `*` and `?` over the text `db.table`.
    pub fn compile(configs: &[RuleConfig]) -> Result<Rules, RuleError> {
        let mut rules = Vec::with_capacity(configs.len());
        for rc in configs {
            let bad = |reason: String| RuleError::BadTable {
                pattern: rc.table.clone(),
                reason,
            };
            if rc.table != "*" && !rc.table.contains('.') {
                return Err(bad("expected `db.table` (globs allowed) or `*`".into()));
            }
            let glob = Glob::new(&rc.table).map_err(|e| bad(e.to_string()))?;
            let folded = GlobBuilder::new(&rc.table)
                .case_insensitive(true)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            if rc.keys.is_empty() {
                return Err(bad("a rule needs at least one key template".into()));
            }
            let templates = rc
                .keys
                .iter()
                .map(|t| Template::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                pattern: rc.table.clone(),
                matcher: glob.compile_matcher(),
                matcher_folded: folded.compile_matcher(),
                templates,
            });
        }
        Ok(Rules { rules })
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The templates for `db.table`, or `None` when no rule matches (the table is skipped),
    /// compared as `case` says: a server with `lower_case_table_names` 1 stores (and its row
    /// events name) `shop.users` for a table created as `Shop.Users`, and with 2 stores it as
    /// created but compares lowercased, so a rule spelt either way must match. Until session 31
    /// this compared exactly, and such a rule skipped every row change in silence.
    pub fn for_table(&self, db: &str, table: &str, case: NameCase) -> Option<TableRules> {
        let name = format!("{db}.{table}");
        let mut seen = BTreeSet::new();
        let mut templates = Vec::new();
        for rule in &self.rules {
            if rule.matches(&name, case) {
                for t in &rule.templates {
                    if seen.insert(t.text.clone()) {
                        templates.push(t.clone());
                    }
                }
            }
        }
        (!templates.is_empty()).then_some(TableRules { templates })
    }

    /// True when some rule matches `db.table` as a statement names it, compared as `case` says.
    pub fn matches(&self, db: &str, table: &str, case: NameCase) -> bool {
        let name = format!("{db}.{table}");
        self.rules.iter().any(|r| r.matches(&name, case))
    }

    /// True when some rule could match a table of database `db` (for DROP DATABASE), compared
    /// as `case` says.
    pub fn may_match_db(&self, db: &str, case: NameCase) -> bool {
        self.rules.iter().any(|r| {
            let db_pattern = r.pattern.split('.').next().unwrap_or("*");
            r.pattern == "*"
                || GlobBuilder::new(db_pattern)
                    .case_insensitive(case == NameCase::Folded)
                    .build()
                    .map(|g| g.compile_matcher().is_match(db))
                    .unwrap_or(true)
        })
    }

    /// Rule patterns (for messages).
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.pattern.as_str())
    }
}

impl TableRules {
    /// Binds placeholders to positions in `columns` (the table's column names in order).
    pub fn bind(&self, table: &str, columns: &[String]) -> Result<TableKeys, MissingColumn> {
        let mut templates = Vec::with_capacity(self.templates.len());
        for t in &self.templates {
            let mut bound = Vec::with_capacity(t.segments.len());
            for s in &t.segments {
                bound.push(match s {
                    Segment::Literal(l) => BoundSegment::Literal(l.clone()),
                    Segment::Column(c) => {
                        // `c` is lowercased; column names are case-insensitive, beyond ASCII
                        // too (`check` passes information_schema's `ÄNDERUNG` for `{änderung}`).
                        let index = columns
                            .iter()
                            .position(|name| {
                                name.eq_ignore_ascii_case(c)
                                    || (!name.is_ascii() && name.to_lowercase() == *c)
                            })
                            .ok_or_else(|| MissingColumn {
                                template: t.text.clone(),
                                column: c.clone(),
                                table: table.to_owned(),
                            })?;
                        BoundSegment::Column(index)
                    }
                });
            }
            templates.push(bound);
        }
        Ok(TableKeys { templates })
    }
}

impl TableKeys {
    /// The column positions the templates read.
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.templates.iter().flatten().filter_map(|s| match s {
            BoundSegment::Column(i) => Some(*i),
            BoundSegment::Literal(_) => None,
        })
    }

    /// Renders every template for one row image; `value(i)` renders column `i` (`Ok(None)` =
    /// NULL), and a template with a NULL placeholder yields no key. A value that cannot be
    /// rendered is not a NULL: its error is returned (at the first one), since the keys of this
    /// row are then unknown.
    pub fn render<F, E>(&self, mut value: F, mut out: impl FnMut(String)) -> Result<(), E>
    where
        F: FnMut(usize) -> Result<Option<String>, E>,
    {
        'templates: for t in &self.templates {
            let mut key = String::new();
            for s in t {
                match s {
                    BoundSegment::Literal(l) => key.push_str(l),
                    BoundSegment::Column(i) => match value(*i)? {
                        Some(v) => key.push_str(&v),
                        None => continue 'templates,
                    },
                }
            }
            out(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: &str, keys: &[&str]) -> RuleConfig {
        RuleConfig {
            table: table.into(),
            keys: keys.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn template_parses_placeholders_and_escapes() {
        let t = Template::parse("u:{ID}:{{x}}:{email}").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("u:".into()),
                Segment::Column("id".into()),
                Segment::Literal(":{x}:".into()),
                Segment::Column("email".into()),
            ]
        );
        for bad in ["u:{id", "u:}", "u:{}", "plain", "u: {id}", "{a{b}}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_match_db_dot_table_and_union_templates() {
        let rules = Rules::compile(&[
            rule("shop.users", &["user:{id}"]),
            rule("shop.*", &["row:{id}", "user:{id}"]),
            rule("*", &["any:{id}"]),
            rule("other.t?", &["t:{id}"]),
        ])
        .unwrap();
        let users = rules.for_table("shop", "users", NameCase::Exact).unwrap();
        let texts: Vec<_> = users.templates.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["user:{id}", "row:{id}", "any:{id}"]);
        assert_eq!(
            rules
                .for_table("other", "t1", NameCase::Exact)
                .unwrap()
                .templates
                .len(),
            2
        );
        assert_eq!(
            rules
                .for_table("other", "t12", NameCase::Exact)
                .unwrap()
                .templates
                .len(),
            1
        );
        let only = Rules::compile(&[rule("shop.users", &["u:{id}"])]).unwrap();
        assert!(only.for_table("shop", "posts", NameCase::Exact).is_none());
        assert!(only.for_table("shopx", "users", NameCase::Exact).is_none());
        assert!(only.may_match_db("shop", NameCase::Exact));
        assert!(!only.may_match_db("other", NameCase::Exact));
        assert!(rules.may_match_db("anything", NameCase::Exact));
        assert!(Rules::compile(&[rule("users", &["u:{id}"])]).is_err());
        assert!(Rules::compile(&[rule("a.[", &["u:{id}"])]).is_err());
        assert!(Rules::compile(&[rule("a.b", &[])]).is_err());
    }

    #[test]
    fn statement_names_match_ignoring_case_only_when_the_server_folds_them() {
        let rules = Rules::compile(&[
            rule("shop.users", &["u:{id}"]),
            rule("shop.post?", &["p:{id}"]),
            rule("logs_*.events", &["e:{id}"]),
        ])
        .unwrap();
        assert_eq!(NameCase::of_server(0), NameCase::Exact);
        assert_eq!(NameCase::of_server(1), NameCase::Folded);
        assert_eq!(NameCase::of_server(2), NameCase::Folded);
        for (db, table) in [
            ("shop", "users"),
            ("Shop", "Users"),
            ("SHOP", "users"),
            ("shop", "POSTS"),
            ("LOGS_2024", "Events"),
        ] {
            assert!(
                rules.matches(db, table, NameCase::Folded),
                "{db}.{table} folded"
            );
            let exact = db
                .chars()
                .chain(table.chars())
                .all(|c| !c.is_ascii_uppercase());
            assert_eq!(
                rules.matches(db, table, NameCase::Exact),
                exact,
                "{db}.{table} exact"
            );
        }
        assert!(!rules.matches("shop", "orders", NameCase::Folded));
        assert!(!rules.matches("shopx", "USERS", NameCase::Folded));
        assert!(rules.may_match_db("SHOP", NameCase::Folded));
        assert!(rules.may_match_db("Logs_1", NameCase::Folded));
        assert!(!rules.may_match_db("SHOP", NameCase::Exact));
        assert!(!rules.may_match_db("other", NameCase::Folded));
        // Row events name tables as stored: exact where the server is case-sensitive, folded
        // where it is not (a rule `Shop.Users` under lower_case_table_names = 1 sees `shop.users`).
        assert!(rules.for_table("Shop", "Users", NameCase::Exact).is_none());
        assert!(rules.for_table("Shop", "Users", NameCase::Folded).is_some());
        assert!(rules
            .for_table("SHOP", "ORDERS", NameCase::Folded)
            .is_none());
    }

    #[test]
    fn bind_and_render_skip_null_and_report_missing_columns() {
        let rules = Rules::compile(&[rule("d.t", &["user:{id}", "user:email:{Email}"])]).unwrap();
        let tr = rules.for_table("d", "t", NameCase::Exact).unwrap();
        let cols = vec!["email".to_string(), "ID".to_string()];
        let keys = tr.bind("d.t", &cols).unwrap();
        let mut out = Vec::new();
        keys.render(
            |i| Ok::<_, ()>((i == 1).then(|| "42".to_string())),
            |k| out.push(k),
        )
        .unwrap();
        assert_eq!(out, ["user:42"], "NULL email skips only its key");
        let mut out = Vec::new();
        keys.render(
            |i| Ok::<_, ()>(Some(["a@b", "7"][i].to_string())),
            |k| out.push(k),
        )
        .unwrap();
        assert_eq!(out, ["user:7", "user:email:a@b"]);
        // An email that cannot be rendered is not a NULL: the row's keys are unknown, and the
        // caller hears so (it flushes the table) instead of losing the email key in silence.
        let rendered = keys.render(
            |i| {
                if i == 0 {
                    Err("lone surrogate")
                } else {
                    Ok(Some("7".into()))
                }
            },
            |_| {},
        );
        assert_eq!(rendered, Err("lone surrogate"));
        let err = tr.bind("d.t", &["id".to_string()]).unwrap_err();
        assert_eq!(err.column, "email");
    }

    /// Column names match ignoring case beyond ASCII too: `check` binds information_schema's
    /// names as the server spells them (`ÄNDERUNG`), and before session 31 a template naming it
    /// failed there, so `run` refused to start, though the binlog's lowercased names bound.
    #[test]
    fn non_ascii_column_names_bind_ignoring_case() {
        for template in ["u:{ÄNDERUNG}", "u:{änderung}"] {
            let rules = Rules::compile(&[rule("d.t", &[template])]).unwrap();
            let tr = rules.for_table("d", "t", NameCase::Exact).unwrap();
            for column in ["ÄNDERUNG", "änderung"] {
                let keys = tr.bind("d.t", &["id".to_string(), column.to_string()]);
                assert!(keys.is_ok(), "{template} against {column}");
            }
            assert!(tr.bind("d.t", &["anderung".to_string()]).is_err());
        }
    }
}
