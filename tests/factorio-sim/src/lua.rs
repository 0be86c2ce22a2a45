//! A deliberately tiny stand-in for Factorio's Lua console: enough for what managers send
//! (`/sc rcon.print(...)`, `print`, `log`, `game.print`, `helpers.write_file`). It evaluates a
//! sequence of calls whose arguments are string/number literals, `..` concatenation, `tostring`,
//! `string.rep`, `game.tick`, `#game.players`, `#game.connected_players`,
//! `game.default_map_gen_settings.seed` and `helpers.table_to_json({})` (2.0) /
//! `game.table_to_json({})` (1.1). Anything else is a Lua-style error, which is also what a real
//! server answers to code it cannot run — so managers see the real error shape.
//! (Embedding a real Lua would cost a C build for little test value.)

pub struct Ctx<'a> {
    pub tick: u64,
    pub players: usize,
    pub connected: usize,
    pub seed: u64,
    pub is_1_1: bool,
    pub script_output: &'a std::path::Path,
}

#[derive(Debug, PartialEq)]
pub enum Out {
    Rcon(String),
    Print(String),
    Log(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Num(f64),
    Name(String),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() || ch == ';' {
            i += 1;
        } else if ch == '\'' || ch == '"' {
            let q = ch;
            i += 1;
            let mut s = String::new();
            loop {
                match c.get(i) {
                    None => return Err("unfinished string near '<eof>'".into()),
                    Some('\\') => {
                        match c.get(i + 1) {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(&x) => s.push(x),
                            None => return Err("unfinished string near '<eof>'".into()),
                        }
                        i += 2;
                    }
                    Some(&x) if x == q => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        s.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if ch.is_ascii_digit() {
            let st = i;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let s: String = c[st..i].iter().collect();
            out.push(Tok::Num(
                s.parse()
                    .map_err(|_| format!("malformed number near '{s}'"))?,
            ));
        } else if ch.is_alphabetic() || ch == '_' {
            let st = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Name(c[st..i].iter().collect()));
        } else if ch == '.' && c.get(i + 1) == Some(&'.') {
            out.push(Tok::Sym(".."));
            i += 2;
        } else {
            let sym = match ch {
                '.' => ".",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '#' => "#",
                '{' => "{",
                '}' => "}",
                _ => return Err(format!("unexpected symbol near '{ch}'")),
            };
            out.push(Tok::Sym(sym));
            i += 1;
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Num(f64),
    Nil,
    Table,
}

impl Val {
    fn to_text(&self) -> Result<String, String> {
        match self {
            Val::Str(s) => Ok(s.clone()),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => Ok(format!("{}", *n as i64)),
            Val::Num(n) => Ok(format!("{n}")),
            Val::Nil => Err("attempt to concatenate a nil value".into()),
            Val::Table => Err("attempt to concatenate a table value".into()),
        }
    }
}

struct P<'a, 'b> {
    t: Vec<Tok>,
    i: usize,
    ctx: &'a Ctx<'b>,
    out: Vec<Out>,
}

impl P<'_, '_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.t.get(self.i).cloned();
        self.i += 1;
        t
    }
    fn eat(&mut self, s: &'static str) -> Result<(), String> {
        match self.next() {
            Some(Tok::Sym(x)) if x == s => Ok(()),
            other => Err(format!("'{s}' expected near '{}'", show(other.as_ref()))),
        }
    }
    fn path(&mut self, first: String) -> Result<String, String> {
        let mut p = first;
        while self.peek() == Some(&Tok::Sym(".")) {
            self.i += 1;
            match self.next() {
                Some(Tok::Name(n)) => {
                    p.push('.');
                    p.push_str(&n);
                }
                other => return Err(format!("<name> expected near '{}'", show(other.as_ref()))),
            }
        }
        Ok(p)
    }
    fn args(&mut self) -> Result<Vec<Val>, String> {
        self.eat("(")?;
        let mut v = Vec::new();
        if self.peek() == Some(&Tok::Sym(")")) {
            self.i += 1;
            return Ok(v);
        }
        loop {
            v.push(self.expr()?);
            match self.next() {
                Some(Tok::Sym(",")) => continue,
                Some(Tok::Sym(")")) => return Ok(v),
                other => return Err(format!("')' expected near '{}'", show(other.as_ref()))),
            }
        }
    }
    fn expr(&mut self) -> Result<Val, String> {
        let mut v = self.term()?;
        while self.peek() == Some(&Tok::Sym("..")) {
            self.i += 1;
            let r = self.term()?;
            v = Val::Str(v.to_text()? + &r.to_text()?);
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<Val, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Val::Str(s)),
            Some(Tok::Num(n)) => Ok(Val::Num(n)),
            Some(Tok::Sym("(")) => {
                let v = self.expr()?;
                self.eat(")")?;
                Ok(v)
            }
            Some(Tok::Sym("{")) => {
                self.eat("}")?;
                Ok(Val::Table)
            }
            Some(Tok::Sym("#")) => match self.next() {
                Some(Tok::Name(n)) => match self.path(n)?.as_str() {
                    "game.players" => Ok(Val::Num(self.ctx.players as f64)),
                    "game.connected_players" => Ok(Val::Num(self.ctx.connected as f64)),
                    p => Err(format!(
                        "attempt to get length of field '{p}' (a nil value)"
                    )),
                },
                other => Err(format!("unexpected symbol near '{}'", show(other.as_ref()))),
            },
            Some(Tok::Name(n)) => {
                let p = self.path(n)?;
                if self.peek() == Some(&Tok::Sym("(")) {
                    let a = self.args()?;
                    return self.call(&p, a);
                }
                Ok(match p.as_str() {
                    "game.tick" => Val::Num(self.ctx.tick as f64),
                    "game.default_map_gen_settings.seed" => Val::Num(self.ctx.seed as f64),
                    "nil" => Val::Nil,
                    "game" | "game.players" | "game.connected_players" => Val::Table,
                    _ => Val::Nil,
                })
            }
            other => Err(format!("unexpected symbol near '{}'", show(other.as_ref()))),
        }
    }
    fn call(&mut self, f: &str, a: Vec<Val>) -> Result<Val, String> {
        let first = || a.first().cloned().unwrap_or(Val::Nil);
        match f {
            "rcon.print" => {
                self.out.push(Out::Rcon(printable(&first())));
                Ok(Val::Nil)
            }
            "print" => {
                self.out.push(Out::Print(printable(&first())));
                Ok(Val::Nil)
            }
            "log" => {
                self.out.push(Out::Log(printable(&first())));
                Ok(Val::Nil)
            }
            "game.print" => Ok(Val::Nil),
            "tostring" => Ok(Val::Str(printable(&first()))),
            "string.rep" => {
                let s = first().to_text()?;
                let n = match a.get(1) {
                    Some(Val::Num(n)) => *n as usize,
                    _ => {
                        return Err(
                            "bad argument #2 to 'rep' (number expected, got no value)".into()
                        );
                    }
                };
                Ok(Val::Str(s.repeat(n.min(64 * 1024 * 1024 / s.len().max(1)))))
            }
            "helpers.table_to_json" if !self.ctx.is_1_1 => Ok(Val::Str("{}".into())),
            "game.table_to_json" if self.ctx.is_1_1 => Ok(Val::Str("{}".into())),
            "helpers.write_file" | "game.write_file" => {
                let name = first().to_text()?;
                if name.contains("..") || name.starts_with('/') {
                    return Err("Path contains invalid characters".into());
                }
                let data = a.get(1).map(printable).unwrap_or_default();
                let append = matches!(a.get(2), Some(Val::Str(s)) if s == "true");
                let path = self.ctx.script_output.join(name);
                if let Some(d) = path.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let r = if append {
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(data.as_bytes()))
                } else {
                    std::fs::write(&path, data)
                };
                r.map_err(|e| e.to_string())?;
                Ok(Val::Nil)
            }
            other => Err(format!(
                "attempt to call field '{}' (a nil value)",
                other.rsplit('.').next().unwrap_or(other)
            )),
        }
    }
}

fn printable(v: &Val) -> String {
    match v {
        Val::Nil => "nil".into(),
        Val::Table => "table: 0x0000000000000000".into(),
        other => other.to_text().unwrap_or_default(),
    }
}

fn show(t: Option<&Tok>) -> String {
    match t {
        None => "<eof>".into(),
        Some(Tok::Str(s)) => s.clone(),
        Some(Tok::Num(n)) => n.to_string(),
        Some(Tok::Name(n)) => n.clone(),
        Some(Tok::Sym(s)) => (*s).into(),
    }
}

/// Run `src`; Err carries the full Factorio error text
/// (`Cannot execute command. Error: [string "<src>"]:1: <msg>`).
pub fn run(src: &str, ctx: &Ctx) -> Result<Vec<Out>, String> {
    let wrap = |m: String| {
        let shown: String = src.chars().take(60).collect();
        format!("Cannot execute command. Error: [string \"{shown}\"]:1: {m}")
    };
    let toks = lex(src).map_err(wrap)?;
    let mut p = P {
        t: toks,
        i: 0,
        ctx,
        out: Vec::new(),
    };
    while p.peek().is_some() {
        match p.next() {
            Some(Tok::Name(n)) => {
                let f = p.path(n).map_err(wrap)?;
                let a = p.args().map_err(wrap)?;
                p.call(&f, a).map_err(wrap)?;
            }
            other => {
                return Err(wrap(format!(
                    "unexpected symbol near '{}'",
                    show(other.as_ref())
                )));
            }
        }
    }
    Ok(p.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            tick: 724,
            players: 2,
            connected: 1,
            seed: 1234,
            is_1_1: false,
            script_output: std::path::Path::new("/nonexistent"),
        }
    }

    #[test]
    fn rcon_print_concat() {
        let out = run(
            "rcon.print(\"tick=\"..game.tick..\" players=\"..#game.connected_players)",
            &ctx(),
        )
        .unwrap();
        assert_eq!(out, vec![Out::Rcon("tick=724 players=1".into())]);
    }

    #[test]
    fn errors_have_factorio_shape() {
        let e = run("blah", &ctx()).unwrap_err();
        assert!(
            e.starts_with("Cannot execute command. Error: [string \"blah\"]:1: "),
            "{e}"
        );
    }

    #[test]
    fn string_rep_makes_big_output() {
        let out = run("rcon.print(string.rep('x', 10000))", &ctx()).unwrap();
        assert!(matches!(&out[0], Out::Rcon(s) if s.len() == 10000));
    }
}
