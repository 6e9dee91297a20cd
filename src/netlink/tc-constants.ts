/**
 * Traffic-control constants with the kernel's names (include/uapi/linux/{rtnetlink,pkt_sched,pkt_cls,
 * gen_stats}.h and linux/tc_act/tc_mirred.h; struct tc_police and TCA_POLICE_* are in pkt_cls.h). The few shared ones (TCA_KIND, TC_H_ROOT, ETH_P_ALL …)
 * live in constants.ts; everything else tc needs is here so the shared file stays short.
 */

// ---- struct tcmsg and top-level TCA_* (linux/rtnetlink.h) ----
/** sizeof(struct tcmsg): family u8, pad u8, pad u16, ifindex s32, handle u32, parent u32, info u32. */
export const TCMSG_LEN = 20;
export const TCA_RATE = 5;
export const TCA_FCNT = 6;
export const TCA_STAB = 8;
export const TCA_PAD = 9;
export const TCA_DUMP_INVISIBLE = 10;
export const TCA_HW_OFFLOAD = 12;
export const TCA_INGRESS_BLOCK = 13;
export const TCA_EGRESS_BLOCK = 14;
export const TCA_DUMP_FLAGS = 15;
export const TCA_EXT_WARN_MSG = 16;

// ---- handles (linux/pkt_sched.h) ----
export const TC_H_MAJ_MASK = 0xffff0000;
export const TC_H_MIN_MASK = 0x0000ffff;
export const TC_H_UNSPEC = 0;
/** Handle of the ingress/clsact qdisc itself: `ffff:`. */
export const TC_H_INGRESS_HANDLE = 0xffff0000;
/** Filter parent for the ingress hook, `ffff:fff2`: valid on both an `ingress` and a `clsact` qdisc. */
export const TC_H_PARENT_INGRESS = 0xfffffff2;
/** Filter parent for the clsact egress hook, `ffff:fff3`. */
export const TC_H_PARENT_EGRESS = 0xfffffff3;

// ---- gnet stats (linux/gen_stats.h) ----
export const TCA_STATS_BASIC = 1;
export const TCA_STATS_RATE_EST = 2;
export const TCA_STATS_QUEUE = 3;
export const TCA_STATS_APP = 4;
export const TCA_STATS_RATE_EST64 = 5;
export const TCA_STATS_PAD = 6;
export const TCA_STATS_BASIC_HW = 7;
export const TCA_STATS_PKT64 = 8;

// ---- rate specs (linux/pkt_sched.h) ----
export const TC_LINKLAYER_UNAWARE = 0;
export const TC_LINKLAYER_ETHERNET = 1;
export const TC_LINKLAYER_ATM = 2;
/** Size of a rate table (TCA_TBF_RTAB, TCA_POLICE_RATE): 256 u32 transmit times. */
export const TC_RTAB_SIZE = 1024;

// ---- tbf (linux/pkt_sched.h) ----
export const TCA_TBF_PARMS = 1;
export const TCA_TBF_RTAB = 2;
export const TCA_TBF_PTAB = 3;
export const TCA_TBF_RATE64 = 4;
export const TCA_TBF_PRATE64 = 5;
export const TCA_TBF_BURST = 6;
export const TCA_TBF_PBURST = 7;
export const TCA_TBF_PAD = 8;

// ---- classifiers (linux/pkt_cls.h) ----
export const TCA_U32_CLASSID = 1;
export const TCA_U32_HASH = 2;
export const TCA_U32_LINK = 3;
export const TCA_U32_DIVISOR = 4;
export const TCA_U32_SEL = 5;
export const TCA_U32_POLICE = 6;
export const TCA_U32_ACT = 7;
export const TCA_U32_INDEV = 8;
export const TCA_U32_PCNT = 9;
export const TCA_U32_MARK = 10;
export const TCA_U32_FLAGS = 11;
export const TCA_U32_PAD = 12;
/** tc_u32_sel.flags: a match ends classification (set by `tc … u32 match …`). */
export const TC_U32_TERMINAL = 1;
export const TC_U32_OFFSET = 2;
export const TC_U32_VAROFFSET = 4;
export const TC_U32_EAT = 8;
/** sizeof(struct tc_u32_sel) without keys, and sizeof(struct tc_u32_key). */
export const TC_U32_SEL_LEN = 16;
export const TC_U32_KEY_LEN = 16;

export const TCA_MATCHALL_CLASSID = 1;
export const TCA_MATCHALL_ACT = 2;
export const TCA_MATCHALL_FLAGS = 3;
export const TCA_MATCHALL_PCNT = 4;
export const TCA_MATCHALL_PAD = 5;

/** TCA_*_FLAGS of classifiers. */
export const TCA_CLS_FLAGS_SKIP_HW = 1 << 0;
export const TCA_CLS_FLAGS_SKIP_SW = 1 << 1;
export const TCA_CLS_FLAGS_IN_HW = 1 << 2;
export const TCA_CLS_FLAGS_NOT_IN_HW = 1 << 3;

// ---- actions (linux/pkt_cls.h, linux/tc_act/tc_mirred.h) ----
export const TCA_ACT_KIND = 1;
export const TCA_ACT_OPTIONS = 2;
export const TCA_ACT_INDEX = 3;
export const TCA_ACT_STATS = 4;
export const TCA_ACT_PAD = 5;
export const TCA_ACT_COOKIE = 6;
export const TCA_ACT_FLAGS = 7;
/** Actions in a list are numbered from 1 (the nest type is the order), at most 32. */
export const TCA_ACT_MAX_PRIO = 32;

/** Control verdicts of an action (TC_ACT_*). TC_ACT_UNSPEC (-1) is tc's `continue`. */
export const TC_ACT_UNSPEC = -1;
export const TC_ACT_OK = 0;
export const TC_ACT_RECLASSIFY = 1;
export const TC_ACT_SHOT = 2;
export const TC_ACT_PIPE = 3;
export const TC_ACT_STOLEN = 4;
export const TC_ACT_QUEUED = 5;
export const TC_ACT_REPEAT = 6;
export const TC_ACT_REDIRECT = 7;
export const TC_ACT_TRAP = 8;

export const TCA_MIRRED_TM = 1;
export const TCA_MIRRED_PARMS = 2;
export const TCA_MIRRED_PAD = 3;
export const TCA_MIRRED_BLOCKID = 4;
export const TCA_EGRESS_REDIR = 1;
export const TCA_EGRESS_MIRROR = 2;
export const TCA_INGRESS_REDIR = 3;
export const TCA_INGRESS_MIRROR = 4;
/** sizeof(struct tc_mirred): tc_gen (index, capab, action, refcnt, bindcnt) + eaction + ifindex. */
export const TC_MIRRED_LEN = 28;

export const TCA_POLICE_TBF = 1;
export const TCA_POLICE_RATE = 2;
export const TCA_POLICE_PEAKRATE = 3;
export const TCA_POLICE_AVRATE = 4;
export const TCA_POLICE_RESULT = 5;
export const TCA_POLICE_TM = 6;
export const TCA_POLICE_PAD = 7;
export const TCA_POLICE_RATE64 = 8;
export const TCA_POLICE_PEAKRATE64 = 9;
export const TCA_POLICE_PKTRATE64 = 10;
export const TCA_POLICE_PKTBURST64 = 11;
/**
 * sizeof(struct tc_police): index, action, limit, burst, mtu (u32 each), rate and peakrate
 * (struct tc_ratespec, 12 bytes each), refcnt, bindcnt, capab.
 */
export const TC_POLICE_LEN = 56;
