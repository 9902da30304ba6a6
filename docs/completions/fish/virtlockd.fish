complete -c virtlockd -s f -l config -d 'Configuration file (default: see below; a file named here must exist)' -r -F
complete -c virtlockd -s t -l timeout -d 'Exit after SECS seconds with no client connected and no lock held (0 = never, the default; at most 2147483)' -r
complete -c virtlockd -s p -l pid-file -d 'PID file to create and lock (default: see below)' -r -F
complete -c virtlockd -l runtime-dir -d 'Put every runtime file (lock socket, admin socket, pid file, restart state) in DIR instead of the default locations. Lets several daemons run side by side' -r -F
complete -c virtlockd -s V -l version -d 'Print version and exit'
complete -c virtlockd -s v -l verbose -d 'Log informational messages too (raises the log level to 2 = info)'
complete -c virtlockd -s d -l daemon -d 'Run in the background; return once the daemon accepts connections'
complete -c virtlockd -s h -l help -d 'Print help (see more with \'--help\')'
