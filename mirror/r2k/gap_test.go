package r2k

import "testing"

func TestHeadGapCountsOnlyUndeliveredEntriesTrimmedFromTheHead(t *testing.T) {
	redis7 := func(last string, read int64) groupPosition {
		return groupPosition{last: last, read: read, readOK: true}
	}
	head := func(length int64, first, lastGen string, added int64, maxDel string) streamHead {
		return streamHead{length: length, first: first, lastGen: lastGen, added: added, addedOK: true, maxDel: maxDel, deletedK: true}
	}
	for _, tc := range []struct {
		name    string
		g       groupPosition
		h       streamHead
		gap     bool
		lost    int64
		atMost  bool
		handled string
	}{
		// 20 entries 1-0..20-0 added, MAXLEN 3 keeps 18..20.
		{"group delivered 3, the next 14 trimmed before it read them", redis7("3-0", 3), head(3, "18-0", "20-0", 20, "0-0"), true, 14, false, ""},
		{"group delivered 10, the next 7 trimmed", redis7("10-0", 10), head(3, "18-0", "20-0", 20, "0-0"), true, 7, false, ""},
		{"group delivered 17: everything it had read was trimmed, nothing else", redis7("17-0", 17), head(3, "18-0", "20-0", 20, "0-0"), false, 0, false, ""},
		{"group caught up, trimming behind it", redis7("20-0", 20), head(3, "18-0", "20-0", 20, "0-0"), false, 0, false, ""},
		{"group inside the stream", redis7("19-0", 19), head(3, "18-0", "20-0", 20, "0-0"), false, 0, false, ""},
		{"inside the stream with entries deleted after it (XDEL): not a gap", redis7("18-0", 18), head(1, "18-0", "20-0", 20, "19-0"), false, 0, false, ""},
		{"entries deleted before the group's position: exact", redis7("10-0", 10), head(3, "18-0", "20-0", 20, "5-0"), true, 7, false, ""},
		// XDEL 12-0, then the head trimmed to 18-0: 11-0 and 13-0..17-0
		// were trimmed unread, but Redis cannot tell 12-0 was not.
		{"an entry deleted after the position, below the head: an upper bound", redis7("10-0", 10), head(3, "18-0", "20-0", 20, "12-0"), true, 7, true, ""},
		// XDEL 12-0 and 19-0: 19-0 is known deleted, 12-0 is not.
		{"the last entry deleted inside the stream is taken off, the others make an upper bound", redis7("10-0", 10), head(2, "18-0", "20-0", 20, "19-0"), true, 7, true, ""},
		// 1-0..10-0 mirrored, 11-0..20-0 added, XDEL 15-0, XTRIM MINID 11-0.
		{"an entry deleted inside the stream, nothing trimmed unread: no gap", redis7("10-0", 10), head(9, "11-0", "20-0", 20, "15-0"), false, 0, false, ""},
		// XDEL 11-0, then XTRIM MINID 12-0: the entry removed was XDELed.
		{"the one entry removed after the position was deleted, below the head: an upper bound", redis7("10-0", 10), head(9, "12-0", "20-0", 20, "11-0"), true, 1, true, ""},
		{"the deleted entry is at or before the group's position: not taken off", redis7("10-0", 10), head(3, "18-0", "20-0", 20, "10-0"), true, 7, false, ""},
		{"stream emptied (XTRIM MAXLEN 0) after the group read all", redis7("20-0", 20), head(0, "", "20-0", 20, "20-0"), false, 0, false, ""},
		{"stream emptied with 5 undelivered", redis7("15-0", 15), head(0, "", "20-0", 20, "0-0"), true, 5, false, ""},
		{"Redis 6.2: head past the position, no counters", groupPosition{last: "10-0"}, streamHead{length: 3, first: "18-0", lastGen: "20-0"}, true, -1, false, ""},
		{"Redis 6.2: position inside the stream", groupPosition{last: "19-0"}, streamHead{length: 3, first: "18-0", lastGen: "20-0"}, false, 0, false, ""},
		{"entries-read unknown, head past the position", groupPosition{last: "10-0"}, head(3, "18-0", "20-0", 20, "0-0"), true, -1, false, ""},
		{"IDs compare as numbers, not text", redis7("9-0", 9), head(3, "10-0", "12-0", 12, "0-0"), false, 0, false, ""},
		{"entries-read unknown but nothing ever removed", groupPosition{last: "0-0"}, head(20, "1-0", "20-0", 20, "0-0"), false, 0, false, ""},
		{"group moved back below what the mirror handled, head inside that", groupPosition{last: "0-0"}, head(3, "18-0", "20-0", 20, "0-0"), false, 0, false, "19-0"},
		// The group's own counter counts from where it stands, not from
		// what the mirror handled: the size is unknown.
		{"group moved back, head above what the mirror handled", redis7("5-0", 5), head(3, "18-0", "20-0", 20, "0-0"), true, -1, false, "10-0"},
		// Mirrored 1-0..10-0, 11-0..20-0 added, XGROUP DESTROY, XTRIM
		// MAXLEN 5, and the group made again at 0-0 (entries-read unknown,
		// or 0 when made with ENTRIESREAD).
		{"group made again, head above what the mirror handled", groupPosition{last: "0-0"}, head(5, "16-0", "20-0", 20, "0-0"), true, -1, false, "10-0"},
		{"group made again with a counter, head above what the mirror handled", redis7("0-0", 0), head(5, "16-0", "20-0", 20, "0-0"), true, -1, false, "10-0"},
		{"group made again, head right after what the mirror handled", groupPosition{last: "0-0"}, head(10, "11-0", "20-0", 20, "0-0"), true, -1, false, "10-0"},
		{"group made again, head inside what the mirror handled", groupPosition{last: "0-0"}, head(12, "9-0", "20-0", 20, "0-0"), false, 0, false, "10-0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gap, lost, atMost := headGap(tc.g, tc.h, tc.handled)
			if gap != tc.gap || lost != tc.lost || atMost != tc.atMost {
				t.Fatalf("headGap = %v, %d, %v; want %v, %d, %v", gap, lost, atMost, tc.gap, tc.lost, tc.atMost)
			}
		})
	}
}
