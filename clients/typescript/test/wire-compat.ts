// Type-level checks, run by `npm run typecheck`: the client's wire types (src/wire.ts)
// against the types generated from the Rust wire types (schema/v1/typescript/, written by
// `cargo xtask schema`). A protocol change that the client does not follow fails here.

import type * as gen from "../../../schema/v1/typescript/index.js";
import type * as my from "../src/wire.js";

type Assert<T extends true> = T;
type Extends<A, B> = [A] extends [B] ? true : false;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** The decoder drops members written as null (RW-CONV-7). */
type NoNull<T> = { [K in keyof T]: Exclude<T[K], null> };
/** The named members of a type, without its index signature. */
type Named<T> = keyof { [K in keyof T as string extends K ? never : K]: T[K] };
type Envelope = "event_id" | "run_id" | "seq" | "type" | "time";

// What the client sends is valid under the generated types.
export type SendHello = Assert<Extends<my.HelloMessage, gen.ClientHello>>;
export type SendSubscribe = Assert<Extends<my.SubscribeMessage, gen.ClientSubscribe>>;
export type SendUnsubscribe = Assert<Extends<my.UnsubscribeMessage, gen.ClientUnsubscribe>>;
export type SendPong = Assert<Extends<my.PongMessage, gen.ClientPong>>;
export type SendEntry = Assert<Same<Named<my.SubscriptionRequest>, keyof gen.SubscriptionRequest>>;

// What a server sends is readable by the client's types, member for member.
export type ReadWelcome = Assert<
  Extends<NoNull<Omit<gen.ServerWelcome, "limits">> & { limits: NoNull<gen.Limits> }, my.WelcomeMessage>
>;
export type ReadLimits = Assert<Extends<NoNull<gen.Limits>, my.Limits>>;
export type ReadSubscribed = Assert<Extends<gen.ServerSubscribed, my.SubscribedMessage>>;
export type ReadUnsubscribed = Assert<Extends<gen.ServerUnsubscribed, my.UnsubscribedMessage>>;
export type ReadPing = Assert<Extends<gen.ServerPing, my.PingMessage>>;
export type ReadPong = Assert<Extends<gen.ServerPong, my.ServerPongMessage>>;
export type ReadError = Assert<Extends<NoNull<gen.ServerError>, my.ErrorMessage>>;
export type ReadResetReason = Assert<Extends<gen.ResetReason, my.ResetReason>>;
export type ReadEnvelope = Assert<Extends<Pick<gen.KnownEvent, Envelope>, Pick<my.RunEvent, Envelope>>>;

// The client's types name exactly the protocol's members: none removed, none added.
export type WelcomeMembers = Assert<Same<Named<my.WelcomeMessage>, keyof gen.ServerWelcome>>;
export type LimitsMembers = Assert<Same<Named<my.Limits>, keyof gen.Limits>>;
export type SubscribedMembers = Assert<Same<Named<my.SubscribedMessage>, keyof gen.ServerSubscribed>>;
export type ResetMembers = Assert<Same<Named<my.ResetMessage>, keyof gen.ServerReset>>;
export type ErrorMembers = Assert<Same<Named<my.ErrorMessage>, keyof gen.ServerError>>;
export type EnvelopeMembers = Assert<Same<Named<my.RunEvent>, keyof gen.KnownEvent>>;
export type SnapshotMembers = Assert<Same<Named<my.RunSnapshot>, keyof gen.RunSnapshot>>;
export type ServerTypes = Assert<Same<my.KnownServerMessage["type"], gen.KnownServerMessage["type"]>>;
export type EventTypes = Assert<Same<(typeof gen.EVENT_TYPES)[number], gen.EventType>>;
