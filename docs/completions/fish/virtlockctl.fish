# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_virtlockctl_global_optspecs
    string join \n socket= runtime-dir= json h/help V/version
end

function __fish_virtlockctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_virtlockctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_virtlockctl_using_subcommand
    set -l cmd (__fish_virtlockctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -s V -l version -d 'Print version'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "locks" -d 'Every held lease with its lockspace, file, mode and owners'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "who" -d 'The lease of a disk path, direct or in a file lockspace (SHA-256 name)'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "clients" -d 'Connections of both servers, with their owners and leases'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "status" -d 'Version, pid, uptime, clients, lockspaces, leases, live upgrades, and whether leases survive a crash of the daemon (crash-safe mode)'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "check" -d 'Whether fcntl locks under DIR reach other hosts. Exit status 2 if not'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "release-unknown" -d 'Release a lease held for an unknown owner: one kept after a crash that the daemon\'s journal could not account for (`locks` lists it with owner pid 0, under the file\'s path). A lease with a known owner is never released this way. Exit status 1 if there is none on PATH'
complete -c virtlockctl -n "__fish_virtlockctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -l lockspace -d 'Only leases in this lockspace directory ("" or "direct" for direct leases)' -r
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -l owner -d 'Only leases with this owner pid' -r
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand locks" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand who" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand who" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand who" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand who" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand clients" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand clients" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand clients" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand clients" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand status" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand status" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand status" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand check" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand check" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand check" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand check" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand release-unknown" -l socket -d 'The daemon\'s admin socket (default: as the daemon\'s, for this user)' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand release-unknown" -l runtime-dir -d 'The daemon\'s --runtime-dir: its admin socket is in there' -r -F
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand release-unknown" -l json -d 'Print JSON (field list in the README; stable)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand release-unknown" -s h -l help -d 'Print help'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "locks" -d 'Every held lease with its lockspace, file, mode and owners'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "who" -d 'The lease of a disk path, direct or in a file lockspace (SHA-256 name)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "clients" -d 'Connections of both servers, with their owners and leases'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "status" -d 'Version, pid, uptime, clients, lockspaces, leases, live upgrades, and whether leases survive a crash of the daemon (crash-safe mode)'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "check" -d 'Whether fcntl locks under DIR reach other hosts. Exit status 2 if not'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "release-unknown" -d 'Release a lease held for an unknown owner: one kept after a crash that the daemon\'s journal could not account for (`locks` lists it with owner pid 0, under the file\'s path). A lease with a known owner is never released this way. Exit status 1 if there is none on PATH'
complete -c virtlockctl -n "__fish_virtlockctl_using_subcommand help; and not __fish_seen_subcommand_from locks who clients status check release-unknown help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
