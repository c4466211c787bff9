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
)

// Type is the LUKS2 token type of atrest tokens.
const Type = "atrest"

// Version is the token format version this build writes; it reads any
// version up to it.
const Version = 1

// ErrNotAtrest means the JSON is a token of another type.
var ErrNotAtrest = errors.New("not an atrest token")

// ErrMalformed means an atrest token that this build cannot read: bad
// JSON, a future version, or fields out of range.
var ErrMalformed = errors.New("atrest token cannot be read")

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
}

// Marshal renders the token as LUKS2 token JSON.
func (t *Token) Marshal() ([]byte, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(wire{
		Type: Type, Keyslots: []string{strconv.Itoa(t.Keyslot)}, Version: Version,
		Name: t.Name, KMS: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion,
		Ciphertext: t.Ciphertext,
		Created:    t.Created.UTC().Format(time.RFC3339Nano),
		Rotated:    t.Rotated.UTC().Format(time.RFC3339Nano),
		Recovery:   t.Recovery,
	})
}

// Parse reads an atrest token. It returns ErrNotAtrest for tokens of other
// types, so callers can skip them.
func Parse(data []byte) (*Token, error) {
	t, err := parse(data)
	if err != nil && !errors.Is(err, ErrNotAtrest) {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return t, err
}

func parse(data []byte) (*Token, error) {
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	if w.Type != Type {
		return nil, ErrNotAtrest
	}
	if w.Version < 1 || w.Version > Version {
		return nil, fmt.Errorf("version %d is not supported by this build (up to %d); upgrade atrest", w.Version, Version)
	}
	if len(w.Keyslots) != 1 {
		return nil, fmt.Errorf("bound to %d keyslots, want exactly 1", len(w.Keyslots))
	}
	slot, err := strconv.Atoi(w.Keyslots[0])
	if err != nil {
		return nil, fmt.Errorf("keyslot %q is not a number", w.Keyslots[0])
	}
	t := &Token{Keyslot: slot, Name: w.Name, KMS: w.KMS, Key: w.Key, KeyVersion: w.KeyVersion,
		Ciphertext: w.Ciphertext, Recovery: w.Recovery}
	if t.Created, err = parseTime(w.Created); err != nil {
		return nil, fmt.Errorf("created: %w", err)
	}
	if t.Rotated, err = parseTime(w.Rotated); err != nil {
		return nil, fmt.Errorf("rotated: %w", err)
	}
	if err := t.validate(); err != nil {
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
	switch {
	case t.Keyslot < 0 || t.Keyslot > 31:
		return fmt.Errorf("keyslot %d out of range", t.Keyslot)
	case t.KMS == "":
		return errors.New("no kms backend")
	case t.Ciphertext == "" && t.KMS != "vault-kv":
		return errors.New("no ciphertext")
	}
	return nil
}
