#!/bin/sh
# golden: refuse to mount a fetched root filesystem whose sha256 differs from golden.sha256=.
#
# /bin/live-boot sources /lib/live/boot/????-* in order, so this file (sorting after live-boot's
# own components) can replace Verify_checksums: live-boot calls it with the medium's mount point
# (/run/live/medium for fetch=) right after the download and before any squashfs is mounted.
# Installed by the golden netboot role; copied into the initramfs by the golden-verify hook.

Golden_say ()
{
	# live-boot sends stdout to boot.log; the console and kmsg are what a serial log shows.
	for _golden_out in /dev/console /dev/kmsg
	do
		echo "${1}" > "${_golden_out}" 2>/dev/null || true
	done
}

Golden_refuse ()
{
	_golden_msg="golden: REFUSING TO BOOT: ${1}"
	Golden_say "${_golden_msg}"
	# panic() returns when someone leaves its rescue shell: never fall through to the mount.
	while true
	do
		panic "${_golden_msg}"
		sleep 5
	done
}

Golden_verify_rootfs ()
{
	_golden_want=""
	_golden_optout=""
	for _golden_p in ${LIVE_BOOT_CMDLINE:-$(cat /proc/cmdline)}
	do
		case "${_golden_p}" in
			golden.sha256=*)
				_golden_want="$(echo "${_golden_p#golden.sha256=}" | tr 'A-F' 'a-f')"
				;;
			golden.noverify)
				_golden_optout="yes"
				;;
		esac
	done

	# A signed Unified Kernel Image carries the hash inside its initrd: it wins over the command line
	# (which anyone on the boot network could forge), and golden.noverify cannot switch it off.
	if [ -s /golden/rootfs.sha256 ]
	then
		_golden_cmdline_want="${_golden_want}"
		_golden_want="$(head -c 64 /golden/rootfs.sha256 | tr 'A-F' 'a-f')"
		_golden_optout=""
		if [ -n "${_golden_cmdline_want}" ] && [ "${_golden_cmdline_want}" != "${_golden_want}" ]
		then
			Golden_say "golden: golden.sha256= on the command line differs from the signed image's; using the signed one"
		fi
	fi

	if [ -z "${_golden_want}" ]
	then
		if [ "${_golden_optout}" = "yes" ]
		then
			Golden_say "golden: WARNING: root filesystem NOT verified (golden.noverify on the command line)"
			return 0
		fi
		Golden_refuse "no golden.sha256= on the kernel command line (the boot server must name the rootfs hash; golden.noverify boots unverified)"
	fi

	_golden_found=""
	for _golden_img in $(find "${1}" -type f -name '*.squashfs' 2>/dev/null)
	do
		_golden_found="yes"
		Golden_say "golden: verifying sha256 of $(basename "${_golden_img}")"
		_golden_got="$(sha256sum "${_golden_img}" | cut -d' ' -f1)"
		if [ "${_golden_got}" != "${_golden_want}" ]
		then
			Golden_refuse "sha256 mismatch for $(basename "${_golden_img}"): got ${_golden_got}, golden.sha256=${_golden_want}"
		fi
		Golden_say "golden: rootfs sha256 verified: ${_golden_got}"
	done

	if [ -z "${_golden_found}" ]
	then
		Golden_refuse "no *.squashfs found under ${1} to verify"
	fi
	return 0
}

# Keep live-boot's own verify-checksums feature: rename its function, then chain to it.
if [ -e /lib/live/boot/0030-verify-checksums ]
then
	eval "$(sed -e 's/^Verify_checksums ()/Live_verify_checksums ()/' /lib/live/boot/0030-verify-checksums)"
else
	Live_verify_checksums () { :; }
fi

Verify_checksums ()
{
	Golden_verify_rootfs "${1}"
	Live_verify_checksums "${@}"
}
