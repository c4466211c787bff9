package cli

import (
	"errors"

	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
)

// Exit codes: the one place they are defined; docs/cli.md lists them and
// every command's --help repeats them.
const (
	ExitOK             = 0  // success
	ExitError          = 1  // an error no other code describes
	ExitUsage          = 2  // bad flags or arguments, missing confirmation
	ExitAttention      = 3  // status: a volume needs attention (stale key version, no backup, ...)
	ExitRefused        = 4  // the device holds data or is in use; nothing was changed
	ExitNotFound       = 5  // no such device, volume, name or UUID
	ExitNotLUKS2       = 6  // not a LUKS2 volume (no header, LUKS1), or not an atrest volume
	ExitDamaged        = 7  // the LUKS2 header is damaged (both copies); restore a backup
	ExitKeyRejected    = 8  // the passphrase or recovery key opens no keyslot
	ExitKMSUnavailable = 9  // the KMS cannot be reached (network, sealed, timeout)
	ExitKMSDenied      = 10 // the KMS refused the credentials or the operation
	ExitKMSKey         = 11 // the KEK is missing or rejected this volume's token
	ExitConfig         = 12 // the configuration file is invalid or insecure
	ExitBusy           = 13 // the mapping is in use, or another atrest process holds the volume
	ExitNoDM           = 14 // this kernel has no device-mapper
	ExitPartial        = 15 // failed part-way; the message says what state the device is in
	ExitNoTPM          = 16 // no TPM at tpm.device, or it stopped answering
	ExitPCRMismatch    = 17 // the TPM's PCRs changed since the secret was sealed
	ExitTPMLockout     = 18 // the TPM is in dictionary-attack lockout
	ExitOtherTPM       = 19 // the sealed object belongs to another TPM (or this one was cleared)
	ExitTPMToken       = 20 // a systemd-tpm2 token is malformed, or uses a feature atrest lacks
	ExitReencrypting   = 21 // a re-encryption is under way or was interrupted; finish it first
)

// ExitCodes describes every code, for --help and docs.
var ExitCodes = []struct {
	Code int
	Text string
}{
	{ExitOK, "success"},
	{ExitError, "an error no other code describes"},
	{ExitUsage, "bad flags or arguments, or a missing confirmation"},
	{ExitAttention, "status only: a volume needs attention"},
	{ExitRefused, "the device holds data or is in use; nothing was changed"},
	{ExitNotFound, "no such device, file, volume name or UUID (or not a device: a directory, /dev/null)"},
	{ExitNotLUKS2, "not a LUKS2 volume (no header, or LUKS1), or not an atrest volume"},
	{ExitDamaged, "both LUKS2 header copies are damaged"},
	{ExitKeyRejected, "the passphrase or recovery key opens no keyslot"},
	{ExitKMSUnavailable, "the KMS cannot be reached"},
	{ExitKMSDenied, "the KMS refused the credentials or the operation"},
	{ExitKMSKey, "the KEK is missing, or the KMS rejected this volume's token"},
	{ExitConfig, "the configuration file is missing, unreadable, invalid or insecure"},
	{ExitBusy, "the mapping is in use, or another atrest process holds the volume"},
	{ExitNoDM, "this kernel has no device-mapper"},
	{ExitPartial, "failed part-way; the message says what state the device is in"},
	{ExitNoTPM, "no TPM at tpm.device, or it stopped answering"},
	{ExitPCRMismatch, "the TPM's PCRs changed since the secret was sealed; nothing was changed"},
	{ExitTPMLockout, "the TPM is in dictionary-attack lockout"},
	{ExitOtherTPM, "the sealed secret belongs to another TPM, or this TPM was cleared"},
	{ExitTPMToken, "a systemd-tpm2 token is malformed (edited by hand?) or uses a systemd feature atrest does not implement"},
	{ExitReencrypting, "a re-encryption of the volume is under way or was interrupted; it opens once it is finished"},
}

// class is what the CLI knows about an error: its exit code, a short kind
// for JSON output, and a hint where a fix is known.
type class struct {
	code int
	kind string
	hint string
}

const (
	hintForce      = "if the data may be destroyed, run again with --force"
	hintReseal     = "reseal with the recovery key: atrest recovery reseal NAME"
	hintDeviceArgs = "name a block device or image file, a volume name or a UUID"
)

// classes maps each kind of pkg/volume's one classification (which
// atrestd's metrics use too) to its exit code and hint. kind overrides the
// JSON kind where an older name is kept.
var classes = map[volume.Kind]class{
	volume.KindNotConfirmed:      {ExitUsage, "", ""},
	volume.KindUsage:             {ExitUsage, "", ""},
	volume.KindEmptyInput:        {ExitUsage, "", "give the secret on the terminal, as one line of standard input, or with --key-file"},
	volume.KindUUIDMismatch:      {ExitUsage, "", "check that the backup is the right one; --force restores a backup of another UUID"},
	volume.KindMalformedRecovery: {ExitKeyRejected, "key-rejected", "a recovery key is 8 groups of 8 letters from cbdefghijklnrtuv"},
	volume.KindConfigInsecure:    {ExitConfig, "", ""},
	volume.KindConfig:            {ExitConfig, "", "name a readable configuration file with -c (docs/config.md)"},
	volume.KindKMSConfig:         {ExitConfig, "config", "check the kms section of the configuration file"},
	volume.KindMemoryLock:        {ExitError, "", "atrest keeps keys in locked memory: raise the limit (ulimit -l 65536; atrestd's unit sets LimitMEMLOCK=64M)"},
	volume.KindNoDeviceMapper:    {ExitNoDM, "", "load dm-crypt (modprobe dm_crypt), or run where device-mapper exists (the real-kernel test tier does)"},
	volume.KindNoMapperNode:      {ExitError, "", "udev did not make the /dev/mapper node: is systemd-udevd running (udevadm settle)? Nothing stays mapped; try again"},
	volume.KindLocked:            {ExitBusy, "", "wait for the other atrest process to finish"},
	volume.KindMappingBusy:       {ExitBusy, "", "unmount the filesystem (and stop what uses the device) first"},
	volume.KindInUse:             {ExitRefused, "", "unmount it, swapoff it, or close what is stacked on it; --force does not override this"},
	volume.KindHeldExclusively:   {ExitRefused, "in-use", "another program holds the device open exclusively"},
	volume.KindHasData:           {ExitRefused, "", hintForce},
	volume.KindAlreadyManaged:    {ExitRefused, "", ""},
	volume.KindNameInUse:         {ExitRefused, "", "choose another --name"},
	volume.KindReadOnly:          {ExitRefused, "", ""},
	volume.KindTooSmall:          {ExitRefused, "", "atrest needs more than 16 MiB (the header) plus data"},
	volume.KindLUKS1:             {ExitNotLUKS2, "", "convert it first: cryptsetup convert --type luks2 DEVICE (after a header backup)"},
	volume.KindNotLUKS:           {ExitNotLUKS2, "", ""},
	volume.KindNotManaged:        {ExitNotLUKS2, "", "take it over with: atrest adopt DEVICE --name NAME"},
	volume.KindBadToken:          {ExitNotLUKS2, "", "the volume's atrest token is unreadable to this build (upgrade atrest if it is newer); the recovery key still opens it: atrest recovery unlock"},
	volume.KindHeaderDamaged:     {ExitDamaged, "", "restore a header backup: atrest header restore DEVICE --backup FILE"},
	volume.KindHeaderUnreadable:  {ExitError, "", "the device failed a read (an I/O error; the kernel log says more): it is failing, not blank: do not format it; copy what it holds off it, or restore its header backup with --force (atrest header restore DEVICE --backup FILE --force)"},
	volume.KindAmbiguous:         {ExitDamaged, "", "find out which signature is real before anything writes; if it is the LUKS2 volume, restore a header backup: atrest header restore DEVICE --backup FILE --force"},
	volume.KindDeviceChanged:     {ExitBusy, "", "the device path was re-pointed while atrest ran; check the path and run the command again"},
	volume.KindKeyRejected:       {ExitKeyRejected, "", ""},
	volume.KindVerify:            {ExitError, "", ""},
	volume.KindKMSUnavailable:    {ExitKMSUnavailable, "", "check the network and the KMS (atrest kms check); the recovery key opens the volume meanwhile (atrest recovery unlock)"},
	volume.KindKMSAuth:           {ExitKMSDenied, "", "check the node's KMS credentials (Vault token or AppRole, KMIP client certificate): atrest kms check"},
	volume.KindKMSDenied:         {ExitKMSDenied, "", "the KMS does not allow this node the operation (Vault policy: docs/vault.md; KMIP object permissions and state: docs/kmip.md)"},
	volume.KindKMSKeyNotFound:    {ExitKMSKey, "", "if the KEK is gone for good, " + hintReseal},
	volume.KindKMSUnknownBackend: {ExitKMSKey, "kms-key-not-found", "the token names a KMS this node is not configured for; " + hintReseal},
	volume.KindKMSRejected:       {ExitKMSKey, "", "the token does not belong to this volume or its key version was retired; " + hintReseal},
	volume.KindKMSSecretNotFound: {ExitKMSKey, "", ""},
	volume.KindNoTPM:             {ExitNoTPM, "", "check tpm.device (ls /dev/tpmrm0; modprobe tpm_tis or tpm_crb); the recovery key opens the volume meanwhile (atrest recovery unlock)"},
	volume.KindTPMGone:           {ExitNoTPM, "", "the TPM stopped answering mid-operation; check it (a software TPM: is swtpm running?) and run the command again"},
	volume.KindPCRMismatch:       {ExitPCRMismatch, "", "measured boot changed since the secret was sealed (firmware, boot loader, Secure Boot state); nothing was changed; the recovery key opens the volume (atrest recovery unlock); docs/tpm.md says how to seal again"},
	volume.KindTPMLockout:        {ExitTPMLockout, "", "too many failed authorizations: wait for the TPM's lockout to expire, or clear it (tpm2_dictionarylockout --clear-lockout); the recovery key opens the volume meanwhile"},
	volume.KindOtherTPM:          {ExitOtherTPM, "", "the disk or the state directory came from another machine, or this TPM was cleared; the recovery key opens the volume (atrest recovery unlock); docs/tpm.md says how to seal again"},
	volume.KindWrongPIN:          {ExitKeyRejected, "", "the TPM counts wrong PINs towards its lockout"},
	volume.KindTPMBadToken:       {ExitTPMToken, "", "the volume's systemd-tpm2 token does not parse or does not fit its sealed object: restore the header from a backup (atrest header restore), or remove the TPM keyslot (atrest tpm remove NAME --keyslot N) and enroll it again"},
	volume.KindTPMUnsupported:    {ExitTPMToken, "", "the token uses a systemd feature atrest does not implement (signed PCR policy, pcrlock, salted PIN, persistent SRK): open with systemd-cryptsetup, or enroll with systemd 252's features"},
	volume.KindNotFound:          {ExitNotFound, "", ""},
	volume.KindNotADevice:        {ExitNotFound, "", hintDeviceArgs},
	volume.KindNoRecovery:        {ExitNotFound, "", ""},
	volume.KindReencrypting:      {ExitReencrypting, "", "finish it: atrest reencrypt NAME, or cryptsetup reencrypt --resume-only where the message says atrest cannot (atrest status NAME shows the progress); nothing was changed"},
	volume.KindAlreadyLUKS:       {ExitRefused, "", ""},
	volume.KindFSUnsupported:     {ExitRefused, "", "encryption in place takes one ext2/3/4, btrfs (one device) or XFS (internal log) file system on the whole device; for anything else copy the data onto a new atrest volume"},
	volume.KindFSTooLarge:        {ExitRefused, "", "make the room the message says (resize2fs, btrfs filesystem resize, or for XFS a larger device), then run again; nothing was changed"},
	volume.KindBackupStale:       {ExitRefused, "", "restore a backup taken since the re-encryption (the state directory's backup is refreshed when it ends); --force restores this one anyway, and the data re-encrypted since will not decrypt under it (docs/reencrypt.md)"},
	volume.KindOther:             {ExitError, "", ""},
}

// classify maps err to its class.
func classify(err error) class {
	var usage *usageError
	if errors.As(err, &usage) {
		return class{ExitUsage, "usage", usage.hint}
	}
	// urfave/cli's own errors (an unknown command or help topic).
	var ucliErr ucli.ExitCoder
	if errors.As(err, &ucliErr) {
		return class{ExitUsage, "usage", "see atrest --help"}
	}
	f := volume.Classify(err)
	c, ok := classes[f.Kind]
	if !ok {
		c = classes[volume.KindOther]
	}
	if c.kind == "" {
		c.kind = string(f.Kind)
	}
	if f.Partial {
		c.code, c.kind = ExitPartial, "partial"
	}
	return c
}

// usageError is a bad invocation.
type usageError struct {
	msg, hint string
}

func (e *usageError) Error() string { return e.msg }

func usagef(hint, msg string) error { return &usageError{msg: msg, hint: hint} }
