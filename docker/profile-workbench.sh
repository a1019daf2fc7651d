# Login shells (invoke shell runs `bash -l`) rebuild PATH from /etc/profile: keep the workbench venv first.
export VIRTUAL_ENV=/opt/workbench-venv
case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac
