package ojson

import "testing"

func TestRoundTripKeepsOrderAndValues(t *testing.T) {
	in := `{"z":1,"a":[true,null,-2.5e3,"x\u0001\"\\/é"],"m":{"b":{},"a":[]}}`
	v, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"z":1,"a":[true,null,-2.5e3,"x\u0001\"\\/é"],"m":{"b":{},"a":[]}}`
	if got := string(Marshal(v)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if v.Get("a").Elems[2].Kind != Float || v.Get("z").Kind != Int {
		t.Fatal("number kinds")
	}
}

func TestDuplicateKeysFollowJSONC(t *testing.T) {
	v, err := Parse([]byte(`{"a":1,"b":2,"a":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(Marshal(v)); got != `{"a":3,"b":2}` {
		t.Fatalf("duplicate keys: %s", got)
	}
}

func TestParseRefusesTrailingData(t *testing.T) {
	for _, s := range []string{`{} {}`, `{"a":1`, `{'a':1}`, `{"a":1} x`, `/*c*/{}`} {
		if _, err := Parse([]byte(s)); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
}

// TestDepthLimitFollowsJSONC: json-c (so cryptsetup) parses values at most
// 32 levels deep, scalars included; a deeper header is refused.
func TestDepthLimitFollowsJSONC(t *testing.T) {
	nest := func(levels int, inner string) string {
		s := inner
		for range levels {
			s = "[" + s + "]"
		}
		return s
	}
	for _, c := range []struct {
		text string
		ok   bool
	}{
		{nest(31, "1"), true},  // the scalar is level 32
		{nest(32, "1"), false}, // level 33
		{nest(31, "[]"), true}, // the empty array is level 32
		{nest(32, "[]"), false},
	} {
		if _, err := Parse([]byte(c.text)); (err == nil) != c.ok {
			t.Errorf("%d bytes of nesting: err %v, want ok=%v", len(c.text), err, c.ok)
		}
	}
}
