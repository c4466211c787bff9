package storm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Audited is what one Vault node's file audit log says of a storm: the
// transit decrypts it answered without error, per node of the fleet,
// and when it answered the first and the last of them. Only the active
// node audits a request (a standby forwards it), so a failover shows as
// the old active node's log ending at the kill and the new one's
// beginning after it.
type Audited struct {
	// Decrypts counts the successful batch decrypts per node name.
	Decrypts map[string]int
	// First and Last are the times of the first and last of them.
	First, Last time.Time
}

// Total is the number of decrypts the log holds.
func (a *Audited) Total() int {
	n := 0
	for _, c := range a.Decrypts {
		n += c
	}
	return n
}

// ReadAudit reads the file audit log at path from byte offset from on
// (its size before the storm) and returns what it says of f's nodes.
// A log that does not exist (a node that was never active) is empty.
func ReadAudit(path string, from int64, f *Fleet) (*Audited, error) {
	a := &Audited{Decrypts: map[string]int{}}
	keys := map[string]string{} // transit/decrypt/<key> -> node
	for _, n := range f.Nodes {
		keys["transit/decrypt/"+n.Key] = n.Name
	}
	fh, err := os.Open(path)
	if os.IsNotExist(err) {
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if _, err := fh.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var torn error // a line that did not parse: only the last may be (a killed node)
	for sc.Scan() {
		if torn != nil {
			return nil, torn
		}
		var e struct {
			Time    time.Time `json:"time"`
			Type    string    `json:"type"`
			Error   string    `json:"error"`
			Request struct {
				Path string `json:"path"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			torn = fmt.Errorf("%s: %w", path, err)
			continue
		}
		name, ok := keys[strings.TrimPrefix(e.Request.Path, "/")]
		if !ok || e.Type != "response" || e.Error != "" {
			continue
		}
		a.Decrypts[name]++
		if a.First.IsZero() || e.Time.Before(a.First) {
			a.First = e.Time
		}
		if e.Time.After(a.Last) {
			a.Last = e.Time
		}
	}
	return a, sc.Err()
}

// Size is the size of the file at path, 0 if it does not exist.
func Size(path string) (int64, error) {
	st, err := os.Stat(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
