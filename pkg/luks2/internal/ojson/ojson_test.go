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
