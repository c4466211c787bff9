package config

import (
	"errors"
	"strings"
	"testing"
)

// The tpm section is checked like every other, and "no kms configured" is
// told apart from kms: local (format picks the TPM only in the first case).
func TestTPMSection(t *testing.T) {
	for _, tc := range []struct {
		doc, field string
		defaulted  bool
	}{
		{doc: "", defaulted: true},
		{doc: "tpm:\n  device: swtpm:host=127.0.0.1,port=2321\n", defaulted: true},
		{doc: "kms: local\n"},
		{doc: "kms: tpm\ntpm:\n  pcrs: [7, 11]\n  bank: sha256\n"},
		{doc: "kms: tpm\ntpm:\n  pcrs: [24]\n", field: "tpm.pcrs"},
		{doc: "kms: tpm\ntpm:\n  pcrs: [7, 7]\n", field: "tpm.pcrs"},
		{doc: "kms: tpm\ntpm:\n  bank: md5\n", field: "tpm.bank"},
		{doc: "kms: tpm\ntpm:\n  pin: true\n", field: "tpm.pin"},
		{doc: "kms: tpm\ntpm:\n  device: tpmrm0\n", field: "tpm.device"},
		{doc: "tpm:\n  reseal: never\n", defaulted: true},
		{doc: "tpm:\n  reseal: always\n", field: "tpm.reseal"},
	} {
		c, err := Parse([]byte(tc.doc), "atrest.yaml")
		var ce *Error
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%q: %v", tc.doc, err)
		case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field || ce.Line == 0):
			t.Errorf("%q: %v, want an error at %s with its line", tc.doc, err, tc.field)
		case tc.field == "" && c.KMSDefaulted != tc.defaulted:
			t.Errorf("%q: KMSDefaulted %v, want %v", tc.doc, c.KMSDefaulted, tc.defaulted)
		case tc.field == "" && len(c.TPM.PCRs) == 0:
			t.Errorf("%q: no default PCRs", tc.doc)
		case tc.field == "" && c.TPM.Reseal != map[bool]string{true: ResealNever, false: ResealAuto}[strings.Contains(tc.doc, "reseal: never")]:
			t.Errorf("%q: tpm.reseal %q (auto unless never is written)", tc.doc, c.TPM.Reseal)
		}
	}
}
