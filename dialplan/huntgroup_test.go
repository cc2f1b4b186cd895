package dialplan

import "testing"

func TestResolveChoosesThePlanByPilotNumber(t *testing.T) {
	plans := Plans{
		{Name: "main", Security: Secured, URIType: TelephoneExtension, NumberOfDigits: 5},
		{Name: "external", Security: SIPSecured, URIType: E164},
		{Name: "lync", Security: Secured, URIType: SIPURI},
	}
	groups := []HuntGroup{
		{Pilot: "5000", DialPlan: "external"},
		{Pilot: "+1 (425) 555-0100", DialPlan: "external"},
		{Pilot: "+1-425-555-0199", DialPlan: "main"},
		{Pilot: "subscriber.access", DialPlan: "lync"},
		{Pilot: "5000", DialPlan: "main"}, // shadowed by the first
		{Pilot: "6000", DialPlan: "gone"},
	}
	rows := []struct {
		name, defaultPlan, user string
		plan                    string // "" when refused
		code                    int
		reason                  string
	}{
		{"pilot match", "main", "5000", "external", 0, ""},
		{"first matching group wins", "", "5000", "external", 0, ""},
		{"pilot match ignores tel parameters", "main", "5000;phone-context=pbx.example.com", "external", 0, ""},
		{"pilot match ignores visual separators on both sides", "main", "+14255550100", "external", 0, ""},
		{"separators in the user part too", "main", "+1.425.555.0199", "main", 0, ""},
		{"the + is significant", "main", "14255550100", "main", 0, ""},
		{"a number is not a prefix match", "main", "50001", "main", 0, ""},
		{"a non-number pilot matches exactly", "main", "subscriber.access", "lync", 0, ""},
		{"a non-number pilot is case-sensitive", "main", "Subscriber.Access", "main", 0, ""},
		{"a non-number pilot does not ignore dots", "main", "subscriberaccess", "main", 0, ""},
		{"no group: the gateway's default plan", "main", "12345", "main", 0, ""},
		{"no group and no default", "", "12345", "", 404, ReasonNoDialPlan},
		{"empty user and no default", "", "", "", 404, ReasonNoDialPlan},
		{"a group naming no plan", "main", "6000", "", 500, ReasonUnknownDialPlan},
		{"a default naming no plan", "gone", "12345", "", 500, ReasonUnknownDialPlan},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			p, d := Resolve(plans, row.defaultPlan, groups, row.user)
			if row.code == 0 {
				wantAllowed(t, d)
				if p.Name != row.plan {
					t.Errorf("plan %q, want %q", p.Name, row.plan)
				}
				return
			}
			if d.Allow || d.Code != row.code || d.Reason != row.reason || p != (Plan{}) {
				t.Errorf("got %+v %+v, want %d %s and the zero Plan", p, d, row.code, row.reason)
			}
		})
	}
}

func TestNoDialPlanIsRefusedWith404AndItsWarning(t *testing.T) {
	_, d := Resolve(Plans{{Name: "main", Security: Secured}}, "", []HuntGroup{{Pilot: "5000", DialPlan: "main"}}, "4000")
	wantRefused(t, d, 404, ReasonNoDialPlan, "no dial plan for this number")
}

func TestHuntGroupsWithAnEmptyPilotMatchNothing(t *testing.T) {
	p, d := Resolve(Plans{{Name: "main", Security: Secured}, {Name: "other", Security: Unsecured}},
		"main", []HuntGroup{{Pilot: "", DialPlan: "other"}}, "")
	if !d.Allow || p.Name != "main" {
		t.Errorf("got %+v %+v", p, d)
	}
}
