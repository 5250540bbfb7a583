//! The packaging outputs of the binary: shell completions and the man page.
//! Run the real binary, as a packager's script would.

use std::process::Command;

fn kvmdrive(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvmdrive"))
        .args(args)
        .output()
        .expect("run kvmdrive");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F _kvmdrive"),
        ("zsh", "#compdef kvmdrive"),
        ("fish", "complete -c kvmdrive"),
    ] {
        let (ok, text) = kvmdrive(&["completions", shell]);
        assert!(ok, "completions {shell} failed");
        assert!(
            text.contains(marker),
            "{shell}: no `{marker}` in the script"
        );
        for sub in ["up", "destroy", "ssh-config", "box", "host"] {
            assert!(
                text.contains(sub),
                "{shell}: subcommand {sub} not completed"
            );
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_kvmdrive"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_is_roff_with_every_command() {
    let (ok, text) = kvmdrive(&["man"]);
    assert!(ok);
    assert!(text.contains(".TH kvmdrive 1"), "no .TH header");
    assert!(text.contains(".SH SUBCOMMANDS"), "no SUBCOMMANDS section");
    for sub in ["up", "destroy", "ssh\\-config", "completions"] {
        assert!(text.contains(sub), "man page does not mention {sub}");
    }
}
