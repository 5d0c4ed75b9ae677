use zed_extension_api::{self as zed, LanguageServerId, Result, Worktree};

struct Exlsp;

impl zed::Extension for Exlsp {
    fn new() -> Self {
        Exlsp
    }

    fn language_server_command(&mut self, _id: &LanguageServerId, worktree: &Worktree) -> Result<zed::Command> {
        let command = worktree.which("exlsp").ok_or("exlsp is not on PATH (pip install exlsp)")?;
        Ok(zed::Command { command, args: vec!["serve".into()], env: worktree.shell_env() })
    }
}

zed::register_extension!(Exlsp);
