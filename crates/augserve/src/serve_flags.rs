//! `augserve serve`'s setting flags, made from the server's settings table
//! (`augserve_server::config::SETTINGS`): one flag per setting, with the setting's help, TOML
//! key and variable. A new setting gets its flag, variable and help line from its one entry.

use augserve_server::config::{Kind, ServerConfig, DEFAULT_LISTEN_TCP, OTHER_VARIABLES, SETTINGS};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

/// The setting flags given on the command line: (setting key, value), in table order.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags(pub Vec<(&'static str, String)>);

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = SETTINGS
            .iter()
            .filter_map(|s| Some((s.key, matches.get_one::<String>(s.key)?.clone())))
            .collect();
        Ok(SettingFlags(given))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for SettingFlags {
    fn augment_args(cmd: Command) -> Command {
        let defaults = ServerConfig::default();
        cmd.next_help_heading("Settings (each also a TOML key and an AUGSERVE_* variable)")
            .args(SETTINGS.iter().map(|s| {
                let default = match s.show(&defaults) {
                    d if d.is_empty() => String::new(),
                    d => format!("; default {d}"),
                };
                let help = format!("{} [{} / {}{default}]", s.help, s.toml_key(), s.env_name());
                let arg = Arg::new(s.key)
                    .long(s.flag())
                    .value_name(s.kind.value_name())
                    .help(help)
                    .action(ArgAction::Set);
                if s.kind == Kind::Switch {
                    // `--gpu-decode` alone switches it on; `--gpu-decode=false` off.
                    arg.num_args(0..=1)
                        .require_equals(true)
                        .default_missing_value("true")
                } else {
                    arg
                }
            }))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The long help after the flags: precedence, the list-valued keys, the other variables.
pub fn config_help() -> String {
    let mut text = format!(
        "Configuration, lowest to highest precedence: the --config TOML file, AUGSERVE_*
environment variables, then flags; each overrides the one before, key by key. Every setting
above is a TOML key (those named limits.* under [limits]), a variable AUGSERVE_<KEY> and a
flag. Unknown keys and AUGSERVE_* variables are refused with the nearest known name.
Listeners: the server listens where listen_tcp and listen_uds say; only when neither is given
anywhere does it listen on {DEFAULT_LISTEN_TCP}.

Also:
  [[datasets]] name, path, format / AUGSERVE_DATASETS=name=path,name2=path2 / --dataset NAME=PATH
                          format: image_folder | file_list | webdataset (guessed when absent)
  AUGSERVE_TOKENS         accepted bearer tokens, comma-separated (environment only)
"
    );
    for (name, what) in OTHER_VARIABLES {
        text.push_str(&format!("  {name:<24}{what}\n"));
    }
    text
}
