// Command pcrextend extends a PCR of the sha256 bank of the guest's TPM
// (/dev/tpmrm0) with a fixed digest, as a changed boot chain (firmware,
// Secure Boot keys) would: the boot tier's early unit runs it to make the
// PCR policies sealed in earlier boots refuse.
//
//	pcrextend PCR
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pcrextend PCR")
		os.Exit(2)
	}
	pcr, err := strconv.Atoi(os.Args[1])
	if err == nil {
		err = extend(pcr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pcrextend:", err)
		os.Exit(1)
	}
	fmt.Printf("extended PCR %d (sha256)\n", pcr)
}

func extend(pcr int) error {
	t, err := linuxtpm.Open("/dev/tpmrm0")
	if err != nil {
		return err
	}
	defer t.Close()
	digest := make([]byte, 32)
	digest[31] = 1
	_, err = tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: digest},
		}},
	}.Execute(t)
	return err
}
