"""What the agent does to the phone line: hang up, transfer (cold or warm), send DTMF.

`CallControl` is the seam between the conversation (agent/call_agent.py, tested in text mode) and the
LiveKit room; `LiveKitCallControl` is the real one, used inside a LiveKit job.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from livekit import api

from activities.livekit import CALLEE_IDENTITY

if TYPE_CHECKING:
    from livekit.agents import JobContext, llm

log = logging.getLogger(__name__)

DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
DTMF_GAP_SECS = 0.3  # between two tones, as LiveKit's own send_dtmf_events tool does


class TransferFailed(Exception):
    """The transfer did not reach the human; the agent goes back to the callee."""


class CallControl(Protocol):
    async def hang_up(self) -> None: ...

    async def transfer_cold(self, to_phone_number: str) -> None: ...

    async def transfer_warm(
        self, to_phone_number: str, *, summary_instructions: str | None, chat_ctx: llm.ChatContext
    ) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


class LiveKitCallControl:
    """The line of one LiveKit job: the callee is the SIP participant `callee` of the job's room."""

    def __init__(
        self,
        ctx: JobContext,
        *,
        trunk_id: str | None,
        from_phone_number: str,
        hold_music: bool = True,
    ) -> None:
        self.ctx = ctx
        self.trunk_id = trunk_id
        self.from_phone_number = from_phone_number
        self.hold_music = hold_music  # during a warm transfer; False: the callee holds in silence

    async def hang_up(self) -> None:
        """Delete the room: the SIP leg and every participant are disconnected."""
        try:
            await self.ctx.api.room.delete_room(api.DeleteRoomRequest(room=self.ctx.room.name))
        except api.ServerError as err:
            if err.code != "not_found":
                raise

    async def transfer_cold(self, to_phone_number: str) -> None:
        """SIP REFER: the callee's leg is handed to the number (the trunk must allow REFER)."""
        try:
            await self.ctx.api.sip.transfer_sip_participant(
                api.TransferSIPParticipantRequest(
                    room_name=self.ctx.room.name,
                    participant_identity=CALLEE_IDENTITY,
                    transfer_to=f"tel:{to_phone_number}",
                    play_dialtone=False,
                )
            )
        except api.ServerError as err:
            raise TransferFailed(str(err)) from None

    async def transfer_warm(
        self, to_phone_number: str, *, summary_instructions: str | None, chat_ctx: llm.ChatContext
    ) -> None:
        """livekit-agents' WarmTransferTask: the callee holds, the AI briefs the human, then bridges."""
        from livekit.agents import ToolError
        from livekit.agents.beta.workflows import WarmTransferTask, WorkflowInstructions

        instructions = WorkflowInstructions(extra=summary_instructions) if summary_instructions else None
        try:
            await WarmTransferTask(
                sip_call_to=to_phone_number,
                sip_trunk_id=self.trunk_id,
                sip_number=self.from_phone_number,
                chat_ctx=chat_ctx,
                **({"instructions": instructions} if instructions else {}),
                **({} if self.hold_music else {"hold_audio": None}),
            )
        except ToolError as err:
            raise TransferFailed(str(err)) from None

    async def send_dtmf(self, digits: str) -> None:
        participant = self.ctx.room.local_participant
        for digit in digits:
            await participant.publish_dtmf(code=DTMF_CODES[digit], digit=digit)
            await asyncio.sleep(DTMF_GAP_SECS)
