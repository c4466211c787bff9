// Package token owns the JSON token atrest stores in a LUKS2 header: the
// wrapped platform secret of one keyslot, which KMS key wrapped it, and the
// volume's name and recovery arrangements.
//
// One atrest token is bound to exactly one platform keyslot. Its shape:
//
//	{"type":"atrest","keyslots":["0"],"version":1,"name":"data1",
//	 "kms":"vault-transit","key":"atrest-node7","key_version":3,
//	 "ciphertext":"vault:v3:...","created":"2026-11-22T08:00:00Z",
//	 "rotated":"2026-11-22T08:00:00Z","recovery":"vault-kv:secret/atrest/recovery/node7/<uuid>"}
//
// The wrapping context (the volume UUID) is not stored: it is always taken
// from the header the token sits in, so a token copied into another
// volume's header no longer unwraps. docs/token.md describes every field.
package token

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/atrest/atrest/pkg/config"
)

// Type is the LUKS2 token type of atrest tokens.
const Type = "atrest"

// Version is the token format version this build writes; it reads any
// version up to it.
const Version = PolicyVersion

// ErrNotAtrest means the JSON is a token of another type.
var ErrNotAtrest = errors.New("not an atrest token")

// ErrInvalid means an atrest token cannot be used by this build: its JSON
// is malformed, a field is missing or out of range, or it was written by a
// newer atrest. Callers skip such a token, as cryptsetup and
// systemd-cryptsetup skip tokens they cannot parse.
var ErrInvalid = errors.New("invalid atrest token")

// Token is one atrest LUKS2 token.
type Token struct {
	// Keyslot is the platform keyslot the wrapped secret opens.
	Keyslot int
	// Name is the volume's mapping name, /dev/mapper/NAME.
	Name string
	// KMS is the backend that wrapped the secret (vault-transit, vault-kv, local).
	KMS string
	// Key names the KEK (transit key name, KV path, local keystore).
	Key string
	// KeyVersion is the KEK version that produced Ciphertext.
	KeyVersion int
	// Ciphertext is the wrapped platform secret as the backend returned it.
	// It is not secret on its own: it needs the KEK to unwrap.
	Ciphertext string
	// Created is when the platform keyslot was made.
	Created time.Time
	// Rotated is when Ciphertext was last produced (format, rekey, rewrap).
	Rotated time.Time
	// Recovery says where this volume's recovery key went: "" (none),
	// "printed", or "<backend>:<path>" for an escrow.
	Recovery string
	// Policy, when set, makes this a policy token (version 2, KMS
	// KMSPolicy, Key the policy's canonical form): bound to one keyslot
	// per branch, Keyslot being the first branch's.
	Policy *Policy
}

type wire struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Version    int      `json:"version"`
	Name       string   `json:"name"`
	KMS        string   `json:"kms"`
	Key        string   `json:"key"`
	KeyVersion int      `json:"key_version"`
	Ciphertext string   `json:"ciphertext"`
	Created    string   `json:"created"`
	Rotated    string   `json:"rotated"`
	Recovery   string   `json:"recovery,omitempty"`
	// Policy is only in version 2 tokens.
	Policy *wirePolicy `json:"policy,omitempty"`
}

// Marshal renders the token as LUKS2 token JSON.
func (t *Token) Marshal() ([]byte, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	version, slots := 1, []string{}
	for _, s := range t.Slots() {
		slots = append(slots, strconv.Itoa(s))
	}
	if t.Policy != nil {
		version = PolicyVersion
	}
	return json.Marshal(wire{
		Type: Type, Keyslots: slots, Version: version, Policy: t.Policy.toWire(),
		Name: t.Name, KMS: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion,
		Ciphertext: t.Ciphertext,
		Created:    t.Created.UTC().Format(time.RFC3339Nano),
		Rotated:    t.Rotated.UTC().Format(time.RFC3339Nano),
		Recovery:   t.Recovery,
	})
}

// Parse reads an atrest token. It returns ErrNotAtrest for tokens of other
// types, so callers can skip them, and an error wrapping ErrInvalid for an
// atrest token this build cannot use.
func Parse(data []byte) (*Token, error) {
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		var probe struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(data, &probe) == nil && probe.Type != Type {
			return nil, ErrNotAtrest
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if w.Type != Type {
		return nil, ErrNotAtrest
	}
	t, err := parse(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return t, nil
}

func parse(w wire) (*Token, error) {
	if w.Version < 1 || w.Version > Version {
		return nil, fmt.Errorf("version %d is not supported by this build (up to %d); upgrade atrest", w.Version, Version)
	}
	var pol *Policy
	if w.Version >= PolicyVersion && w.Policy != nil {
		var err error
		if pol, err = w.Policy.parse(); err != nil {
			return nil, err
		}
	}
	want := 1
	if pol != nil {
		want = len(pol.Branches)
	}
	if len(w.Keyslots) != want {
		return nil, fmt.Errorf("bound to %d keyslots, want exactly %d", len(w.Keyslots), want)
	}
	slot, err := strconv.Atoi(w.Keyslots[0])
	if err != nil {
		return nil, fmt.Errorf("keyslot %q is not a number", w.Keyslots[0])
	}
	t := &Token{Keyslot: slot, Name: w.Name, KMS: w.KMS, Key: w.Key, KeyVersion: w.KeyVersion,
		Ciphertext: w.Ciphertext, Recovery: w.Recovery, Policy: pol}
	if pol != nil {
		t.Keyslot = pol.Branches[0].Keyslot
		for i, s := range t.Slots() {
			if w.Keyslots[i] != strconv.Itoa(s) {
				return nil, fmt.Errorf("keyslots %v are not the policy's %v", w.Keyslots, t.Slots())
			}
		}
	}
	if t.Created, err = parseTime(w.Created); err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	if t.Rotated, err = parseTime(w.Rotated); err != nil {
		return nil, fmt.Errorf("rotated: %w", err)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, s)
}

func (t *Token) validate() error {
	if err := t.check(); err != nil {
		return fmt.Errorf("atrest token: %w", err)
	}
	return nil
}

func (t *Token) check() error {
	switch {
	case t.Keyslot < 0 || t.Keyslot > 31:
		return fmt.Errorf("keyslot %d out of range", t.Keyslot)
	case t.KMS == "":
		return errors.New("no kms backend")
	case (t.KMS == KMSPolicy) != (t.Policy != nil):
		return errors.New("kms policy and a policy go together")
	case t.Policy != nil:
		if err := t.Policy.check(); err != nil {
			return err
		}
	case t.Ciphertext == "" && t.KMS != "vault-kv":
		return errors.New("no ciphertext")
	}
	// The name becomes /dev/mapper/NAME and appears in every output: a name
	// read from a header is held to the rule for names typed on the command
	// line or written in the configuration. Empty means "from the config".
	if t.Name != "" {
		return config.CheckName(t.Name)
	}
	return nil
}

// NameOf returns the name an atrest token records even when Parse refuses
// the token (a field this build does not know, a newer version): the
// volume stays findable by name and `recovery reseal` can give it a new
// platform token under that name. Callers validate the name like any
// other (config.CheckName) before they use it.
func NameOf(data []byte) string {
	var w struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if json.Unmarshal(data, &w) != nil || w.Type != Type {
		return ""
	}
	return w.Name
}
