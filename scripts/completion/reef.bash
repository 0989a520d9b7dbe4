# bash completion for reef(1): commands, their options, server names (reef's own and
# python-gitlab's sections, read from the files themselves) and mounted reef directories.
# Installed as share/bash-completion/completions/reef.

# With "own", reef's servers only (what 'reef logout' can remove).
_reef_servers()
{
	local cfg="${XDG_CONFIG_HOME:-$HOME/.config}/reef/config" f files=()
	if [[ -r $cfg ]]; then
		files+=("$cfg")
		# the single-server file of earlier versions names its server "default"
		grep -q '^server=' "$cfg" 2>/dev/null && echo default
	fi
	if [[ ${1-} == own ]]; then
		:
	elif [[ -n ${PYTHON_GITLAB_CFG-} ]]; then
		files+=("$PYTHON_GITLAB_CFG")
	else
		files+=(/etc/python-gitlab.cfg "$HOME/.python-gitlab.cfg")
	fi
	for f in "${files[@]}"; do
		[[ -r $f ]] || continue
		sed -n 's/^[[:space:]]*\[\([A-Za-z0-9._-]*\)\][[:space:]]*$/\1/p' "$f" 2>/dev/null
	done | grep -vx global
}

_reef_mounts()
{
	# mount points of type fuse.reef (field 5; the type follows the lone "-")
	awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "fuse.reef") print $5; break } }' \
		/proc/self/mountinfo 2>/dev/null | sed 's/\\040/ /g'
}

_reef_dirs()
{
	local IFS=$'\n'
	COMPREPLY+=($(compgen -d -- "$1"))
}

_reef()
{
	local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
	local cmds="login logout servers mount unmount umount status commit diff discard launch follow prefetch cache gc"
	local IFS=$' \t\n' cmd="" i
	COMPREPLY=()
	for ((i = 1; i < COMP_CWORD; i++)); do
		if [[ ${COMP_WORDS[i]} != -* ]]; then
			cmd="${COMP_WORDS[i]}"
			break
		fi
	done
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "$cmds --help --version" -- "$cur"))
		return
	fi
	case "$cmd" in
	login)
		case "$prev" in
		--gitlab)
			COMPREPLY=($(compgen -W "$(_reef_servers)" -- "$cur"))
			return ;;
		--name) return ;;
		esac
		COMPREPLY=($(compgen -W "--name --gitlab --help" -- "$cur"))
		[[ $cur != -* ]] && COMPREPLY+=($(compgen -W "https:// http://" -- "$cur"))
		;;
	logout)
		if [[ $prev == --name ]]; then
			COMPREPLY=($(compgen -W "$(_reef_servers own)" -- "$cur"))
			return
		fi
		COMPREPLY=($(compgen -W "--name --help" -- "$cur"))
		;;
	mount)
		if [[ $prev == -o ]]; then
			local opts="server= mgmt= token_file= cache= cache_limit= branch_ttl= poll=
				prefetch= readahead= passthrough= retry_max= max_requests= max_threads=
				max_idle_threads= log= unreachable= verbose nonempty allow_other"
			local pre="" last="$cur"
			if [[ $cur == *,* ]]; then
				pre="${cur%,*},"
				last="${cur##*,}"
			fi
			COMPREPLY=($(compgen -P "$pre" -W "$opts" -- "$last"))
			compopt -o nospace 2>/dev/null
			return
		fi
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "-o -f --help" -- "$cur"))
			return
		fi
		COMPREPLY=($(compgen -W "$(_reef_servers)" -- "$cur"))
		_reef_dirs "$cur"
		;;
	unmount | umount)
		[[ $cur == -* ]] && { COMPREPLY=($(compgen -W "--help" -- "$cur")); return; }
		local IFS=$'\n'
		COMPREPLY=($(compgen -W "$(_reef_mounts)" -- "$cur"))
		IFS=$' \t\n'
		COMPREPLY+=($(compgen -W "$(_reef_servers)" -- "$cur"))
		;;
	status | cache | gc)
		if [[ $cur == -* ]]; then
			local o="--help"
			[[ $cmd == status ]] && o="--json --help"
			[[ $cmd == cache ]] && o="--list --evict-all --json --help"
			[[ $cmd == gc ]] && o="--all --help"
			COMPREPLY=($(compgen -W "$o" -- "$cur"))
			return
		fi
		[[ $cmd == cache && $COMP_CWORD -eq 2 ]] && COMPREPLY=($(compgen -W "ls" -- "$cur"))
		local IFS=$'\n'
		COMPREPLY+=($(compgen -W "$(_reef_mounts)" -- "$cur"))
		_reef_dirs "$cur"
		;;
	launch)
		[[ $cur == -* ]] && { COMPREPLY=($(compgen -W "--follow --help" -- "$cur")); return; }
		_reef_dirs "$cur"
		;;
	commit)
		case "$prev" in
		-m | --lfs-above) return ;;
		esac
		[[ $cur == -* ]] && { COMPREPLY=($(compgen -W "-m --lfs-above --help" -- "$cur")); return; }
		_reef_dirs "$cur"
		;;
	diff | discard)
		[[ $cur == -* ]] && { COMPREPLY=($(compgen -W "--help" -- "$cur")); return; }
		local IFS=$'\n'
		COMPREPLY=($(compgen -f -- "$cur"))
		;;
	follow | prefetch)
		[[ $cur == -* ]] && { COMPREPLY=($(compgen -W "--help" -- "$cur")); return; }
		local IFS=$'\n'
		COMPREPLY=($(compgen -f -- "$cur"))
		;;
	servers)
		COMPREPLY=($(compgen -W "--help" -- "$cur"))
		;;
	esac
}
complete -F _reef reef
