// Package luks2 is atrest's LUKS2 engine: it reads, validates, formats and
// changes LUKS2 headers exactly as cryptsetup 2.6 does, so that each tool
// accepts what the other writes.
//
// Reading: Read returns the valid header copy with the highest sequence id,
// validated as strictly as cryptsetup (errors wrap ErrNotLUKS, ErrLUKS1,
// ErrHeaderDamaged, ...). A Header gives the typed keyslots, tokens,
// segments, digests and config; Activation gives what a dm-crypt table
// needs; OpenKeyslot and Open unlock the volume key into a secret.Key.
//
// Writing: every change goes through an Update (Header.Begin): add and kill
// keyslots, set and remove tokens, flags, labels; Commit writes them all as
// one crash-safe header update. A new volume is New, then Begin and Commit,
// which formats the device. Backup, Restore, Repair and Erase cover header
// backups (cryptsetup's file format), damaged copies and crypto-erase.
//
// Devices: a File opens a block device or regular file and takes
// cryptsetup's locks (package devlock); any Device works, which is how the
// tests inject faults. Key material (volume keys, passphrases, derived keys,
// split key material) only ever lives in secret.Key and is wiped.
//
// docs/luks2.md describes what atrest writes and reads, where it differs
// from cryptsetup, and why the write order is crash-safe.
package luks2
