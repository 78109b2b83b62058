//! JsonLogic compiled to a tree, once per activation: operators are resolved to an enum,
//! `var` paths are split, literal sub-trees are folded into one JSON value and `$ref`s are
//! replaced by shared compiled evaluators. Evaluation (in `eval.rs`) never looks at JSON
//! text or operator names again.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::FlagError;

/// A compiled JsonLogic expression.
#[derive(Debug)]
pub(crate) enum Node {
    /// A literal: scalar, all-literal array, or an object that is not a rule.
    Lit(Value),
    /// An array with at least one computed item (evaluated item by item).
    Array(Box<[Node]>),
    /// `{"var": ...}`.
    Var(Box<Var>),
    /// Any other operator with its argument list.
    Op(Op, Box<[Node]>),
    /// A `$ref` to a shared evaluator, compiled once for every flag that uses it.
    Shared(Arc<Node>),
    /// A `var` compared with a literal: the shape of most targeting rules (see [`Test`]).
    Test(Box<Test>),
}

/// `==`, `!=`, `===` or `!==` between a `var` and a literal string (either side first),
/// `starts_with` / `ends_with` of a `var` by a literal string, or a `var` `in` a literal
/// string or array. A value that is a string (every header, cookie and request attribute
/// the proxy reads) is compared with the literal directly; any other value goes through
/// the operator's general semantics. The answers are those of the same [`Node::Op`]
/// (a test in `tests.rs` holds them equal), without building evaluation values for the
/// arguments.
#[derive(Debug)]
pub(crate) struct Test {
    pub op: Op,
    pub var: Var,
    pub lit: Value,
    /// The literal is the first argument (`{"==": ["x", {"var": "v"}]}`).
    pub lit_first: bool,
}

/// A compiled `var`.
#[derive(Debug)]
pub(crate) struct Var {
    pub path: VarPath,
    pub default: Option<Node>,
}

/// The path of a `var`.
#[derive(Debug)]
pub(crate) enum VarPath {
    /// `""` or `null`: the whole data of the current scope.
    Data,
    /// A static dotted path, pre-split; `root` says what its first segment names at the top.
    Segments { segs: Box<[Box<str>]>, root: Root },
    /// A path computed at evaluation time.
    Dynamic(Node),
}

/// What a static path's first segment names in the top-level scope (flagd injects these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// `$flagd.flagKey` exactly.
    FlagKey,
    /// `$flagd.timestamp` exactly.
    Timestamp,
    /// Any other `$flagd...` path.
    Flagd,
    /// `targetingKey...`.
    TargetingKey,
    /// A context attribute.
    Attr,
}

/// A JsonLogic operator (standard, plus flagd's custom ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    If,
    And,
    Or,
    Not,
    NotNot,
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Min,
    Max,
    In,
    Cat,
    Substr,
    Merge,
    Missing,
    MissingSome,
    Map,
    Filter,
    Reduce,
    All,
    Some,
    None,
    StartsWith,
    EndsWith,
    SemVer,
    Fractional,
}

/// Compiles targeting rules, sharing compiled `$evaluators` between flags.
pub(crate) struct Compiler<'d> {
    evaluators: &'d Map<String, Value>,
    /// Compiled evaluators with their nesting height.
    shared: HashMap<&'d str, Result<(Arc<Node>, u32), String>>,
    /// Evaluators being compiled, innermost last (to report `$ref` cycles).
    stack: Vec<&'d str>,
    /// Current nesting depth (rule levels, `$ref`s included) and the deepest level reached.
    depth: u32,
    peak: u32,
    /// Set when the depth limit was hit (such failures depend on where an evaluator is used,
    /// so they are not cached).
    too_deep: bool,
}

/// How deep rules may nest, counting through `$ref`s: bounds the recursion of compilation
/// and evaluation (serde_json refuses JSON nested deeper than this anyway).
pub(crate) const MAX_DEPTH: u32 = 128;

// === impl Op ===

impl Op {
    /// The operator a rule key names; `None` for an unknown operator.
    pub(crate) fn from_name(name: &str) -> Option<Op> {
        Some(match name {
            "if" | "?:" => Op::If,
            "and" => Op::And,
            "or" => Op::Or,
            "!" => Op::Not,
            "!!" => Op::NotNot,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "===" => Op::StrictEq,
            "!==" => Op::StrictNe,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "min" => Op::Min,
            "max" => Op::Max,
            "in" => Op::In,
            "cat" => Op::Cat,
            "substr" => Op::Substr,
            "merge" => Op::Merge,
            "missing" => Op::Missing,
            "missing_some" => Op::MissingSome,
            "map" => Op::Map,
            "filter" => Op::Filter,
            "reduce" => Op::Reduce,
            "all" => Op::All,
            "some" => Op::Some,
            "none" => Op::None,
            "starts_with" => Op::StartsWith,
            "ends_with" => Op::EndsWith,
            "sem_ver" => Op::SemVer,
            "fractional" => Op::Fractional,
            _ => return None,
        })
    }
}

// === impl Compiler ===

impl<'d> Compiler<'d> {
    /// A compiler for rules that may `$ref` into `evaluators`.
    pub(crate) fn new(evaluators: &'d Map<String, Value>) -> Self {
        Compiler {
            evaluators,
            shared: HashMap::new(),
            stack: Vec::new(),
            depth: 0,
            peak: 0,
            too_deep: false,
        }
    }

    /// Compiles every evaluator (so that a defective one is reported even when unused).
    pub(crate) fn compile_all_evaluators(&mut self, errors: &mut Vec<FlagError>) {
        for name in self.evaluators.keys() {
            let _ = self.evaluator(name, errors);
        }
    }

    /// Compiles a rule found at `path`; errors are pushed with their paths. `Err` carries the
    /// first message, for a flag that will resolve to `PARSE_ERROR`.
    pub(crate) fn compile(
        &mut self,
        v: &'d Value,
        path: &mut String,
        errors: &mut Vec<FlagError>,
    ) -> Result<Node, String> {
        let before = errors.len();
        let node = self.node(v, path, errors);
        match errors.get(before) {
            Some(e) => Err(format!("{}: {}", e.path, e.message)),
            None => node.ok_or_else(|| "invalid targeting".to_string()),
        }
    }

    /// The compiled evaluator `name`, compiling it on first use.
    fn evaluator(
        &mut self,
        name: &'d str,
        errors: &mut Vec<FlagError>,
    ) -> Result<Arc<Node>, String> {
        if let Some(done) = self.shared.get(name) {
            let (node, height) = done.clone()?;
            if self.depth + height > MAX_DEPTH {
                self.too_deep = true;
                return Err(format!(
                    "rules nest deeper than {MAX_DEPTH} levels through `$ref` `{name}`"
                ));
            }
            self.peak = self.peak.max(self.depth + height);
            return Ok(node);
        }
        let Some((key, rule)) = self.evaluators.get_key_value(name) else {
            return Err(format!("`$ref` to undefined evaluator `{name}`"));
        };
        if let Some(pos) = self.stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<&str> = self.stack[pos..].to_vec();
            cycle.push(name);
            return Err(format!("`$ref` cycle: {}", cycle.join(" → ")));
        }
        self.stack.push(key);
        let mut path = format!("$evaluators.{key}");
        let before = errors.len();
        let (saved_peak, start) = (self.peak, self.depth);
        let saved_too_deep = std::mem::replace(&mut self.too_deep, false);
        self.peak = start;
        let node = self.node(rule, &mut path, errors);
        let height = self.peak - start;
        self.peak = saved_peak.max(self.peak);
        let too_deep = std::mem::replace(&mut self.too_deep, saved_too_deep) || saved_too_deep;
        self.too_deep = too_deep;
        self.stack.pop();
        let result = match (errors.get(before), node) {
            (None, Some(n)) => Ok((Arc::new(n), height)),
            (Some(e), _) => Err(format!(
                "evaluator `{key}` is invalid ({}: {})",
                e.path, e.message
            )),
            (None, None) => Err(format!("evaluator `{key}` is invalid")),
        };
        if !too_deep {
            self.shared.insert(key, result.clone());
        }
        result.map(|(n, _)| n)
    }

    fn node(
        &mut self,
        v: &'d Value,
        path: &mut String,
        errors: &mut Vec<FlagError>,
    ) -> Option<Node> {
        if self.depth >= MAX_DEPTH {
            self.too_deep = true;
            errors.push(FlagError::new(
                path.clone(),
                format!("rules nest deeper than {MAX_DEPTH} levels (counting `$ref`s)"),
            ));
            return None;
        }
        self.depth += 1;
        self.peak = self.peak.max(self.depth);
        let node = self.node_inner(v, path, errors);
        self.depth -= 1;
        node
    }

    fn node_inner(
        &mut self,
        v: &'d Value,
        path: &mut String,
        errors: &mut Vec<FlagError>,
    ) -> Option<Node> {
        match v {
            Value::Array(items) => {
                let mut nodes = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if super::errors_full(errors) {
                        return None;
                    }
                    let len = path.len();
                    push_index(path, i);
                    match self.node(item, path, errors) {
                        Some(n) => nodes.push(n),
                        None => ok = false,
                    }
                    path.truncate(len);
                }
                ok.then(|| fold_array(nodes))
            }
            Value::Object(map) if map.len() == 1 => {
                let (key, args) = map.iter().next()?;
                let len = path.len();
                path.push('.');
                path.push_str(key);
                let node = self.rule(key, args, path, errors);
                path.truncate(len);
                node
            }
            // Objects with zero or several keys are data in JsonLogic, as are scalars.
            _ => Some(Node::Lit(v.clone())),
        }
    }

    fn rule(
        &mut self,
        key: &'d str,
        args: &'d Value,
        path: &mut String,
        errors: &mut Vec<FlagError>,
    ) -> Option<Node> {
        if key == "$ref" {
            let Value::String(name) = args else {
                errors.push(FlagError::new(
                    path.clone(),
                    "`$ref` must name an evaluator (a string)",
                ));
                return None;
            };
            return match self.evaluator(name, errors) {
                Ok(n) => Some(Node::Shared(n)),
                Err(m) => {
                    errors.push(FlagError::new(path.clone(), m));
                    None
                }
            };
        }
        if key == "var" {
            return self.var(args, path, errors);
        }
        let Some(op) = Op::from_name(key) else {
            errors.push(FlagError::new(
                path.clone(),
                format!("unknown JsonLogic operator `{key}`"),
            ));
            return None;
        };
        let list: &[Value] = match args {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        let mut nodes = Vec::with_capacity(list.len());
        let mut ok = true;
        for (i, a) in list.iter().enumerate() {
            if super::errors_full(errors) {
                return None;
            }
            let len = path.len();
            push_index(path, i);
            match self.node(a, path, errors) {
                Some(n) => nodes.push(n),
                None => ok = false,
            }
            path.truncate(len);
        }
        ok.then(|| op_node(op, nodes))
    }

    fn var(
        &mut self,
        args: &'d Value,
        path: &mut String,
        errors: &mut Vec<FlagError>,
    ) -> Option<Node> {
        let list: &[Value] = match args {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        let mut parts = Vec::with_capacity(list.len().min(2));
        for (i, a) in list.iter().take(2).enumerate() {
            let len = path.len();
            push_index(path, i);
            let n = self.node(a, path, errors);
            path.truncate(len);
            parts.push(n?);
        }
        let mut parts = parts.into_iter();
        let var_path = match parts.next() {
            None => VarPath::Data,
            Some(Node::Lit(Value::Null)) => VarPath::Data,
            Some(Node::Lit(Value::String(s))) => static_path(&s),
            Some(Node::Lit(Value::Number(n))) => static_path(&n.to_string()),
            Some(other) => VarPath::Dynamic(other),
        };
        Some(Node::Var(Box::new(Var {
            path: var_path,
            default: parts.next(),
        })))
    }
}

/// An operator with its compiled arguments: a [`Test`] when it has that shape.
pub(crate) fn op_node(op: Op, args: Vec<Node>) -> Node {
    let symmetric = matches!(op, Op::Eq | Op::Ne | Op::StrictEq | Op::StrictNe);
    let testable = |lit: &Value| match lit {
        Value::String(_) => symmetric || matches!(op, Op::StartsWith | Op::EndsWith | Op::In),
        Value::Array(_) => op == Op::In,
        _ => false,
    };
    let test = |var: Box<Var>, lit, lit_first| {
        Node::Test(Box::new(Test {
            op,
            var: *var,
            lit,
            lit_first,
        }))
    };
    match <[Node; 2]>::try_from(args) {
        Ok([Node::Var(var), Node::Lit(lit)]) if testable(&lit) => test(var, lit, false),
        Ok([Node::Lit(lit), Node::Var(var)]) if symmetric && lit.is_string() => {
            test(var, lit, true)
        }
        Ok(pair) => Node::Op(op, Box::new(pair)),
        Err(args) => Node::Op(op, args.into_boxed_slice()),
    }
}

/// A static `var` path: `""` is the whole data, otherwise segments split on `.`.
pub(crate) fn static_path(p: &str) -> VarPath {
    if p.is_empty() {
        return VarPath::Data;
    }
    let segs: Box<[Box<str>]> = p.split('.').map(Box::from).collect();
    let root = match (&*segs[0], segs.get(1).map(|s| &**s), segs.len()) {
        ("$flagd", Some("flagKey"), 2) => Root::FlagKey,
        ("$flagd", Some("timestamp"), 2) => Root::Timestamp,
        ("$flagd", _, _) => Root::Flagd,
        ("targetingKey", _, _) => Root::TargetingKey,
        _ => Root::Attr,
    };
    VarPath::Segments { segs, root }
}

/// Folds an array whose items are all literals into one literal.
fn fold_array(nodes: Vec<Node>) -> Node {
    if nodes.iter().all(|n| matches!(n, Node::Lit(_))) {
        let values = nodes
            .into_iter()
            .map(|n| match n {
                Node::Lit(v) => v,
                _ => Value::Null,
            })
            .collect();
        Node::Lit(Value::Array(values))
    } else {
        Node::Array(nodes.into_boxed_slice())
    }
}

fn push_index(path: &mut String, i: usize) {
    use std::fmt::Write as _;
    let _ = write!(path, "[{i}]");
}
