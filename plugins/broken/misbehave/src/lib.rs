//! `misbehave`: a plugin that breaks the contract on purpose, one way per
//! function, for the host's tests. Every function takes one `int64` column.
//!
//! - `wrong_rows -> int64`: one row too few;
//! - `wrong_type -> int64`: returns a `float64` column;
//! - `offsets_backwards -> utf8`: offsets that decrease;
//! - `offsets_count -> utf8`: `rows` offsets instead of `rows + 1`;
//! - `offsets_start -> utf8`: offsets starting at 1;
//! - `offsets_beyond -> utf8`: an offset past the end of the data;
//! - `bad_utf8 -> utf8`: bytes that are not UTF-8;
//! - `short_validity -> int64`: a validity bitmap with too few bytes;
//! - `fail -> int64`: returns `err`;
//! - `trap -> int64`: panics (a trap);
//! - `spin -> int64`: never returns;
//! - `grow -> int64`: allocates until memory runs out;
//! - `log -> int64`: logs through `host.log`, stdout and stderr, returns its argument;
//! - `config -> utf8`: the configuration text `init` received, in every row.
//!
//! `init(config)` misbehaves when the configuration text says so:
//! `init-err` returns `err`, `init-trap` panics, `init-loop` never returns.

use std::sync::Mutex;

use cutover_guest::{
    build, export_plugin, log, signature, unknown_function, Column, ColumnExt, DataType, Float64Column, Int64Column,
    Level, Plugin, Signature, VarlenColumn,
};

static CONFIG: Mutex<String> = Mutex::new(String::new());

struct Misbehave;

fn utf8(offsets: Vec<u32>, data: &[u8]) -> Column {
    Column::Utf8(VarlenColumn { offsets, data: data.to_vec(), validity: None })
}

impl Plugin for Misbehave {
    fn functions() -> Vec<Signature> {
        use DataType::{Int64, Utf8};
        let int64 = ["wrong_rows", "wrong_type", "short_validity", "fail", "trap", "spin", "grow", "log"];
        let text = ["offsets_backwards", "offsets_count", "offsets_start", "offsets_beyond", "bad_utf8", "config"];
        let mut out: Vec<Signature> = int64.iter().map(|n| signature(n, &[Int64], Int64)).collect();
        out.extend(text.iter().map(|n| signature(n, &[Int64], Utf8)));
        out
    }

    fn init(config: &str) -> Result<(), String> {
        match config {
            "init-err" => return Err(format!("this configuration is refused: {config}")),
            "init-trap" => panic!("init was told to trap"),
            "init-loop" => loop {
                std::hint::spin_loop();
            },
            _ => {}
        }
        *CONFIG.lock().map_err(|e| e.to_string())? = config.to_owned();
        Ok(())
    }

    fn call(name: &str, mut args: Vec<Column>, rows: usize) -> Result<Column, String> {
        let input = args.pop().ok_or("expected 1 argument")?.into_int64()?;
        let n = rows as u32;
        Ok(match name {
            "wrong_rows" => {
                let mut values = input.values;
                if values.pop().is_none() {
                    values.push(0);
                }
                Column::Int64(Int64Column { values, validity: None })
            }
            "wrong_type" => Column::Float64(Float64Column { values: vec![0.5; rows], validity: None }),
            "short_validity" => Column::Int64(Int64Column { values: input.values, validity: Some(Vec::new()) }),
            "offsets_backwards" => {
                // "a", "b", ... then the last offset runs back to 0.
                let mut offsets: Vec<u32> = (0..=n).collect();
                if let Some(last) = offsets.last_mut() {
                    *last = 0;
                }
                if n < 2 {
                    offsets = vec![0, 2, 1];
                }
                utf8(offsets, &vec![b'a'; rows.max(2)])
            }
            "offsets_count" => utf8((0..n).collect(), &vec![b'a'; rows]),
            "offsets_start" => utf8((1..=n + 1).collect(), &vec![b'a'; rows + 1]),
            "offsets_beyond" => utf8((0..=n).map(|i| i * 2).collect(), &vec![b'a'; rows]),
            "bad_utf8" => utf8((0..=n).collect(), &vec![0xff; rows]),
            "fail" => return Err("refusing to compute: this function always fails".into()),
            "trap" => panic!("the plugin panicked on purpose"),
            "spin" => loop {
                std::hint::spin_loop();
            },
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "log" => {
                log(Level::Info, &format!("log called with {rows} rows"));
                println!("hello from stdout");
                eprintln!("hello from stderr");
                Column::Int64(input)
            }
            "config" => {
                let config = CONFIG.lock().map_err(|e| e.to_string())?.clone();
                build(rows, |_| Some(config.as_str()))
            }
            _ => return Err(unknown_function(name)),
        })
    }
}

export_plugin!(Misbehave);
