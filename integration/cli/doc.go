// Package cli tests the atrest command as provisioning scripts and
// administrators use it: the real binary (built once per test binary, with
// the atrest_failpoints tag so a test can end a rekey half-way), real loop
// devices, cryptsetup as the oracle, the local keystore and a real Vault
// server. Each test asserts what a user sees: the exit code, the message and
// hint on stderr, the JSON document on stdout, and a device left byte for
// byte as it was whenever a command refuses.
//
// The device-mapper half (open, close, recovery unlock) runs in the
// real-kernel tier: guest_test.go, booted by integration/vm.
package cli
