package cli

import (
	"runtime"

	"github.com/atrest/atrest/internal/version"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/volume"
)

// jsonSchema versions every document of -o json (docs/cli.md): fields are
// only ever added within a version; a removed, renamed or retyped field
// raises it. The golden files under testdata/json hold each document.
const jsonSchema = 1

// The documents of -o json, one type each, so that a field cannot change
// by accident (json_test.go compares them with golden files).

// schema is the first field of every document.
type schema struct {
	Schema int `json:"schema"`
}

var v1 = schema{jsonSchema}

type kmsDoc struct {
	Backend    string `json:"backend"`
	Key        string `json:"key"`
	KeyVersion int    `json:"key_version"`
}

// recoveryDoc is a recovery arrangement; Key is the recovery key itself,
// present only in mode print (shown once).
type recoveryDoc struct {
	Mode     string `json:"mode"`
	Keyslot  int    `json:"keyslot"`
	Location string `json:"location,omitempty"`
	Key      string `json:"key,omitempty"`
}

func recoveryJSON(r *volume.Recovery) *recoveryDoc {
	if r == nil {
		return nil
	}
	d := &recoveryDoc{Mode: r.Mode, Keyslot: r.Keyslot, Location: r.Location}
	if r.Key != nil {
		// Never the key itself: printJSONKey and jsonList write its
		// bytes in place of the placeholder (showkey.go).
		d.Key = keyPlaceholder
	}
	return d
}

type formatDoc struct {
	schema
	Device          string       `json:"device"`
	Name            string       `json:"name"`
	UUID            string       `json:"uuid"`
	PlatformKeyslot int          `json:"platform_keyslot"`
	KMS             kmsDoc       `json:"kms"`
	Recovery        *recoveryDoc `json:"recovery"`
	SectorSize      uint32       `json:"sector_size"`
	Flags           []string     `json:"flags"`
	Wiped           []string     `json:"wiped"`
	Backup          string       `json:"backup"`
	Warnings        []string     `json:"warnings"`
}

func formatJSON(r *volume.FormatResult) formatDoc {
	return formatDoc{
		schema: v1, Device: r.Device, Name: r.Name, UUID: r.UUID, PlatformKeyslot: r.PlatformKeyslot,
		KMS:      kmsDoc{r.KMS, r.Key, r.KeyVersion},
		Recovery: recoveryJSON(r.Recovery), SectorSize: r.SectorSize,
		Flags: nonNil(r.Flags), Wiped: nonNil(r.Wiped), Backup: r.Backup, Warnings: nonNil(r.Warnings),
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type statusDoc struct {
	schema
	Healthy bool            `json:"healthy"`
	Volumes []volume.Status `json:"volumes"`
}

// volumesDoc is the document of a command over several volumes: one
// result each, a failed one with its own error and exit code.
type volumesDoc[T any] struct {
	schema
	Volumes []T `json:"volumes"`
}

// failed is a volume's failure in a volumesDoc.
type failed struct {
	Error    string `json:"error,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
}

func failure(err error) failed {
	if err == nil {
		return failed{}
	}
	return failed{err.Error(), classify(err).code}
}

type openResult struct {
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	Device      string `json:"device"`
	Mapper      string `json:"mapper"`
	AlreadyOpen bool   `json:"already_open"`
	// By names what opened the volume (its KMS or policy factors, or
	// tpm-keyslot); Resealed the TPM keyslots sealed again to today's
	// PCRs after it opened.
	By       []string            `json:"by"`
	Resealed []volume.TPMKeyslot `json:"resealed"`
	failed
}

// closeResult is one volume in close's JSON document.
type closeResult struct {
	Name   string `json:"name"`
	UUID   string `json:"uuid,omitempty"`
	Closed bool   `json:"closed"`
	failed
}

// rekeyResult is a rekeyed volume (rekeyed set) or a failed one.
type rekeyResult struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	*rekeyed
	failed
}

type rekeyed struct {
	OldKeyslot int          `json:"old_keyslot"`
	NewKeyslot int          `json:"new_keyslot"`
	KMS        kmsDoc       `json:"kms"`
	Recovery   *recoveryDoc `json:"recovery"`
	Resumed    string       `json:"resumed"`
	Warnings   []string     `json:"warnings"`
}

type rewrapResult struct {
	Name        string   `json:"name"`
	UUID        string   `json:"uuid"`
	KMS         string   `json:"kms"`
	Key         string   `json:"key"`
	FromVersion int      `json:"from_version"`
	ToVersion   int      `json:"to_version"`
	Skipped     bool     `json:"skipped"`
	Warnings    []string `json:"warnings"`
	failed
}

type unlockDoc struct {
	schema
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	Device      string `json:"device"`
	Mapper      string `json:"mapper"`
	AlreadyOpen bool   `json:"already_open"`
}

type rotateDoc struct {
	schema
	Name     string       `json:"name"`
	UUID     string       `json:"uuid"`
	Recovery *recoveryDoc `json:"recovery"`
	Warnings []string     `json:"warnings"`
}

type resealDoc struct {
	schema
	Name       string   `json:"name"`
	UUID       string   `json:"uuid"`
	OldKeyslot int      `json:"old_keyslot"`
	NewKeyslot int      `json:"new_keyslot"`
	KMS        kmsDoc   `json:"kms"`
	Warnings   []string `json:"warnings"`
}

type backupDoc struct {
	schema
	Name   string `json:"name"`
	UUID   string `json:"uuid"`
	Backup string `json:"backup"`
}

type restoreDoc struct {
	schema
	Device   string `json:"device"`
	UUID     string `json:"uuid"`
	Restored bool   `json:"restored"`
}

type checkDoc struct {
	schema
	*volume.CheckResult
}

type eraseDoc struct {
	schema
	Name     string   `json:"name"`
	UUID     string   `json:"uuid"`
	Device   string   `json:"device"`
	Closed   bool     `json:"closed"`
	Erased   bool     `json:"erased"`
	Warnings []string `json:"warnings"`
	// KeyDestroyed and KeyObjects: the KMS key destroyed with the node's
	// last volume under it (kmip.destroy_on_erase).
	KeyDestroyed string `json:"key_destroyed,omitempty"`
	KeyObjects   int    `json:"key_objects_destroyed,omitempty"`
}

type adoptDoc struct {
	schema
	Name            string       `json:"name"`
	UUID            string       `json:"uuid"`
	Device          string       `json:"device"`
	OldKeyslot      int          `json:"old_keyslot"`
	OldRemoved      bool         `json:"old_removed"`
	PlatformKeyslot int          `json:"platform_keyslot"`
	KMS             kmsDoc       `json:"kms"`
	Recovery        *recoveryDoc `json:"recovery"`
	Warnings        []string     `json:"warnings"`
}

type kmsCheckDoc struct {
	schema
	OK    bool      `json:"ok"`
	Steps []stepDoc `json:"steps"`
}

type stepDoc struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

type keyInfoDoc struct {
	schema
	kms.KeyInfo
}

type errorDoc struct {
	schema
	Error errorBody `json:"error"`
}

type errorBody struct {
	Message  string `json:"message"`
	Kind     string `json:"kind"`
	ExitCode int    `json:"exit_code"`
	Hint     string `json:"hint"`
}

type versionDoc struct {
	schema
	Version string `json:"version"`
	Go      string `json:"go"`
}

func versionJSON() versionDoc {
	return versionDoc{v1, version.Version, runtime.Version()}
}
